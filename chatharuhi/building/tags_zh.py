"""Chinese speech tags: ``少安对他的朋友说：“…”``, ``“…”她问。``, ``胡永合笑着问他：``, action beats and vocatives.

A novel that puts each sentence on its own line (as the World of Plainness set does) has its tag in the line
before (ending in ``：``) or after (``她问。``); both are looked at."""

from __future__ import annotations

import re

from .context import Context, Tag

SPEECH_VERBS = ("说", "问", "道", "喊", "叫", "答", "嚷", "吼", "骂", "告诉", "解释", "补充", "念叨", "嘟囔", "喃喃",
                "叹", "插嘴", "开口", "吩咐", "安慰", "劝", "建议", "宣布", "命令", "埋怨", "抱怨", "央求", "哀求",
                "反驳", "回应", "重复", "嘀咕", "嘱咐", "提醒", "恳求", "强调", "称赞", "夸", "笑", "哭", "应")
_ADDRESSEE_BEFORE = ("对", "向", "跟", "和", "给", "朝", "冲", "问", "叫", "望着", "看着", "盯着", "拉着", "同")
_PRONOUN = re.compile(r"(?<![其])([他她我])(?![们])")
_END = "。！？；…"
NEXT_LINE_TAG_CHARS = 40  # a following line this short can be the tag ("她问。")


def _subject(ctx: Context, start: int, end: int) -> Tag | None:
    """The first person named in ``text[start:end]`` who is not an addressee (``对少平``) : a name or a pronoun."""
    text = ctx.text
    names = {m.start: m for m in ctx.narration_mentions(start, end)}
    pos = start
    while pos < end:
        m = names.get(pos)
        if m is not None:
            if not text[max(start, pos - 2):pos].endswith(_ADDRESSEE_BEFORE):
                return Tag("name", pos, m.who)
            pos = m.end
            continue
        ch = text[pos]
        if ch in "他她我" and _PRONOUN.match(text, pos) and not ctx.in_quote(pos):
            if not text[max(start, pos - 2):pos].endswith(_ADDRESSEE_BEFORE):
                if ch == "我":
                    return Tag("narrator", pos)
                return Tag("pronoun", pos, gender="m" if ch == "他" else "f")
        pos += 1
    return None


def _has_verb(segment: str) -> bool:
    return any(v in segment for v in SPEECH_VERBS)


def tag_after(ctx: Context, qi: int, limit: int) -> Tag | None:
    """``“…”她问。``: the subject of the sentence right after the quotation, when it has a speech verb."""
    q = ctx.quotes[qi]
    text = ctx.text
    start = min(q.end + 1, limit)
    if start >= limit or not text[start:limit].strip():
        return None
    return _after_tag(ctx, start, limit)


def tag_next_line(ctx: Context, qi: int) -> Tag | None:
    """``“…”`` on its own line, then ``她问。`` on the next: a short narration line that does not lead into
    another quotation."""
    q = ctx.quotes[qi]
    nxt = q.paragraph + 1
    if nxt >= len(ctx.paragraphs) or nxt in ctx.by_paragraph:
        return None
    p = ctx.paragraphs[nxt]
    line = ctx.text[p.start:p.end]
    if len(line) > NEXT_LINE_TAG_CHARS or line.rstrip()[-1:] in ("：", ":", "，", ","):
        return None
    tag = _after_tag(ctx, p.start, p.end)
    if tag is None:  # "“什么？”" then "张有智的脸沉了下来。": the reaction of the one who spoke
        first = _subject(ctx, p.start, min(p.end, p.start + 4))
        if first is not None and first.kind == "name" and first.position == p.start:
            return Tag("name", first.position, first.who, None, "after", verb=False)
    return tag


def _after_tag(ctx: Context, start: int, limit: int) -> Tag | None:
    text = ctx.text
    seg = text[start:limit]
    cut = min((seg.find(c) for c in _END if c in seg), default=len(seg))
    sentence_end = start + cut
    if not _has_verb(text[start:sentence_end][:20]):
        return None
    tag = _subject(ctx, start, sentence_end)
    return Tag(tag.kind, tag.position, tag.who, tag.gender, "after") if tag else None


def tag_before(ctx: Context, start: int, end: int) -> Tag | None:
    """``少安对他的朋友说：``: the subject of the sentence that leads into the quotation."""
    text = ctx.text
    seg = text[start:end].rstrip()
    if not seg or seg[-1] not in "：:，,":
        return None
    last = max((seg.rfind(c, 0, len(seg) - 1) for c in _END), default=-1)
    a = start + last + 1
    b = start + len(seg)
    if seg[-1] in "，," and not _has_verb(text[a:b]):
        return None
    tag = _subject(ctx, a, b)
    return Tag(tag.kind, tag.position, tag.who, tag.gender, "before") if tag else None


def beat(ctx: Context, para: int) -> Tag | None:
    """The subject of the narration that opens the paragraph, before its first quotation."""
    spans = ctx.narration_spans(para)
    first = ctx.by_paragraph.get(para)
    if first:
        spans = [s for s in spans if s[1] <= ctx.quotes[first[0]].start]
    for a, b in spans[:1]:
        seg = ctx.text[a:b]
        cut = min((seg.find(c) for c in _END + "，" if c in seg), default=len(seg))
        tag = _subject(ctx, a, a + max(cut, 1))
        if tag is not None:
            return Tag(tag.kind, tag.position, tag.who, tag.gender, "beat", verb=False)
    return None


def vocatives(ctx: Context, qi: int) -> list[tuple[int, ...]]:
    """Members addressed by name in the quotation: ``“少平，你…”``, ``“…，润叶姐！”``."""
    q = ctx.quotes[qi]
    text = ctx.text
    out = []
    for men in ctx.mentions_in(q.start, q.end):
        before = text[men.start - 1] if men.start > q.start else ""
        after = text[men.end] if men.end < q.end else ""
        if (men.start == q.start or before in "，,！!？?。…") and (men.end >= q.end or after in "，,！!？?。…"):
            out.append(men.who)
    return out
