"""English speech tags: ``"…," said Holmes``, ``"…," he replied``, ``Holmes said: "…"``, action beats
(``Poirot nodded. "…"``) and vocatives inside a quotation (``"…, Hastings?"``)."""

from __future__ import annotations

import re

from .context import Context, Tag

SPEECH_VERBS = frozenset("""
said says say saying asked asks ask replied replies reply answered answers answer cried cries exclaimed exclaims
returned returns remarked remarks observed observes continued continues added adds murmured murmurs whispered
whispers shouted shouts called calls began begins repeated repeats urged urges inquired inquires enquired enquires
demanded demands rejoined rejoins retorted retorts interposed interposes interrupted interrupts protested protests
explained explains suggested suggests declared declares resumed resumes pursued pursues growled growls muttered
mutters sighed sighs laughed laughs screamed screams shrieked yelled roared bawled sobbed gasped stammered
stuttered faltered groaned moaned snapped snarled sneered grumbled mumbled insisted persisted admitted confessed
agreed assented acknowledged conceded objected argued pleaded begged entreated implored urged warned advised
announced proclaimed stated affirmed asserted maintained concluded commenced ventured hazarded hinted responded
echoed queried questioned wondered mused reflected thought remonstrated expostulated chimed put broke went
burst blurted shouted chuckled giggled smiled grinned nodded hissed breathed panted wailed howled thundered
bellowed squeaked piped drawled lisped ejaculated vociferated exclaiming replying answering observing adding
continuing returning remarking crying whispering murmuring asking saying cried rejoined interjected corrected
explained reasoned proceeded told tells called calling shouting muttering sighing laughing
""".split())
FEMALE_NOUNS = dict.fromkeys("lady woman girl mother wife sister daughter aunt widow housekeeper maid nurse matron "
                             "landlady mistress damsel dame niece grandmother".split(), "f")
MALE_NOUNS = dict.fromkeys("man gentleman boy father husband brother son uncle fellow lad doctor surgeon "
                           "magistrate beadle gentlemen squire lawyer inspector detective landlord master "
                           "coroner judge clergyman vicar old_man Jew".lower().split(), "m")
PRONOUNS = {"he": "m", "she": "f", "him": "m", "her": "f"}
_WORD = re.compile(r"[A-Za-z][\w'’]*")
_ADVERB = r"(?:\w+ly\s+|again\s+|then\s+|now\s+|at\s+last\s+|at\s+once\s+|presently\s+)?"
_AFTER_START = re.compile(r"[\s,;—–-]*")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_DESCRIPTION = re.compile(r"(?:the|a|an|his|her|their|my|our)\s+(?:\w+\s+){0,2}?\w+", re.I)


def _verb_at(text: str, pos: int, limit: int) -> tuple[str, int] | None:
    """The speech verb starting at ``pos`` (after an optional adverb), and where it ends."""
    m = re.compile(_ADVERB + r"([A-Za-z]+)").match(text, pos, limit)
    if m and m.group(1).lower() in SPEECH_VERBS:
        return m.group(1), m.end()
    return None


def _mention_at(ctx: Context, pos: int, limit: int) -> Tag | None:
    """A cast name, a pronoun, ``I`` or a description starting at ``pos``."""
    for men in ctx.mentions_in(pos, pos + 1):
        return Tag("name", men.start, men.who)
    m = _WORD.match(ctx.text, pos, limit)
    if not m:
        return None
    word = m.group()
    if word == "I":
        return Tag("narrator", pos)
    if word.lower() in ("he", "she"):
        return Tag("pronoun", pos, gender=PRONOUNS[word.lower()])
    d = _DESCRIPTION.match(ctx.text, pos, limit)
    if d and word.lower() in ("the", "a", "an", "his", "her", "their", "my", "our"):
        head = d.group().split()[-1].lower()
        return Tag("description", pos, gender=FEMALE_NOUNS.get(head) or MALE_NOUNS.get(head))
    return None


def tag_after(ctx: Context, qi: int, limit: int) -> Tag | None:
    """A tag in the narration right after quotation ``qi`` (up to ``limit``): ``said Holmes`` or ``he said``."""
    q = ctx.quotes[qi]
    text = ctx.text
    pos = _AFTER_START.match(text, min(q.end + 1, limit), limit).end()
    if pos >= limit:
        return None
    verb = _verb_at(text, pos, limit)
    if verb:  # "said Holmes", "replied he", "cried the old man"
        m = re.compile(r"\s+").match(text, verb[1], limit)
        if m:
            who = _mention_at(ctx, m.end(), limit)
            if who is not None:
                return Tag(who.kind, who.position, who.who, who.gender, "after")
        return None
    who = _mention_at(ctx, pos, limit)
    if who is None:
        return None
    end = _mention_end(ctx, who, limit)
    # "Holmes said", "he replied quickly", "Poirot, smiling, answered", "Mr. Bumble, who ..., said"
    rest = text[end:limit]
    m = re.match(r"\s*(?:,[^,.!?\"]{1,60},\s*)?", rest)
    verb = _verb_at(text, end + m.end(), limit)
    if verb:
        return Tag(who.kind, who.position, who.who, who.gender, "after")
    # "…," he added with a smile / "…," Holmes went on: any verb-like word after a comma-ended quotation
    closing = text[q.end - 1: q.end] if q.end > q.start else ""
    w = _WORD.match(text, end + m.end(), limit)
    if closing in (",", "—", "-") and w and (w.group().endswith("ed") or w.group() in ("went", "broke", "put")):
        return Tag(who.kind, who.position, who.who, who.gender, "after")
    return None


def _mention_end(ctx: Context, tag: Tag, limit: int) -> int:
    if tag.kind == "name":
        for men in ctx.mentions_in(tag.position, tag.position + 1):
            return men.end
    m = _DESCRIPTION.match(ctx.text, tag.position, limit) if tag.kind == "description" else None
    if m:
        return m.end()
    w = _WORD.match(ctx.text, tag.position, limit)
    return w.end() if w else tag.position


def tag_next_line(ctx: Context, qi: int) -> Tag | None:
    """English books keep a quotation's tag in its own paragraph."""
    return None


def tag_before(ctx: Context, start: int, end: int) -> Tag | None:
    """A tag in the narration ``text[start:end]`` before a quotation, ending in ``,`` or ``:``: ``Holmes said, "…"``."""
    text = ctx.text
    before = text[start:end].rstrip()
    if not before or before[-1] not in ",:—–-":
        return None
    clause_start = start
    for m in _SENTENCE_END.finditer(text, start, start + len(before) - 1):
        clause_start = m.end()
    clause_end = start + len(before)
    words = list(re.finditer(r"[A-Za-z]+", text[clause_start:clause_end]))
    if not any(w.group().lower() in SPEECH_VERBS for w in words):
        return None
    verb_pos = next(clause_start + w.start() for w in words if w.group().lower() in SPEECH_VERBS)
    # the subject: the name, pronoun or "I" just before the verb ("seeing this, he resumed:"), else the first of
    # the clause; else "said Holmes:"
    found = [t for pos in _word_starts(text, clause_start, verb_pos)
             if (t := _mention_at(ctx, pos, verb_pos)) is not None and t.kind != "description"]
    if found:
        near = found[-1]
        gap = text[_mention_end(ctx, near, verb_pos):verb_pos]
        tag = near if len(gap.split()) <= 2 and "," not in gap else found[0]
        return Tag(tag.kind, tag.position, tag.who, tag.gender, "before")
    tag = _mention_at(ctx, _skip_word(text, verb_pos, clause_end), clause_end)
    if tag is not None and tag.kind != "description":
        return Tag(tag.kind, tag.position, tag.who, tag.gender, "before")
    return None


def _word_starts(text: str, start: int, end: int):
    for m in re.finditer(r"(?<![\w.])[A-Za-z]", text[start:end]):
        yield start + m.start()


def _skip_word(text: str, pos: int, end: int) -> int:
    m = re.compile(r"[A-Za-z]+\s+").match(text, pos, end)
    return m.end() if m else pos


def beat(ctx: Context, para: int) -> Tag | None:
    """The subject of the narration before the paragraph's first quotation (``Poirot shook his head. "…"``),
    or of a narration paragraph, when it starts a sentence."""
    text = ctx.text
    spans = ctx.narration_spans(para)
    first = ctx.by_paragraph.get(para)
    if first:
        spans = [s for s in spans if s[1] <= ctx.quotes[first[0]].start]
    for a, b in spans[:1]:
        seg = text[a:b]
        for m in re.finditer(r"(?:^|(?<=[.!?;]\s)|(?<=[.!?]\s\s))\s*(?:(?:Then|But|And|Now|Here|At\s+this|At\s+last)"
                             r",?\s+)?", seg):
            pos = a + m.end()
            if pos >= b:
                continue
            tag = _mention_at(ctx, pos, b)
            if tag is not None and tag.kind in ("name", "narrator", "pronoun"):
                return Tag(tag.kind, tag.position, tag.who, tag.gender, "beat", verb=False)
    return None


def vocatives(ctx: Context, qi: int) -> list[tuple[int, ...]]:
    """The cast members addressed by name inside quotation ``qi`` (``"Well, Hastings?"``, ``"My dear Poirot, …"``)."""
    q = ctx.quotes[qi]
    text = ctx.text
    out = []
    for men in ctx.mentions_in(q.start, q.end):
        pre = text[max(q.start, men.start - 12): men.start]
        post = text[men.end: men.end + 2]
        opens = men.start == q.start or re.search(r"(?:[,;!?—]\s*|(?:[Mm]y\s+)?(?:dear|good|poor|O|oh)\s+)$", pre)
        closes = men.end >= q.end or re.match(r"[,!?.;—]", post)
        if opens and closes:
            out.append(men.who)
    return out
