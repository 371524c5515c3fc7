"""Who said it: a deterministic, precision-first sieve over a source's quotations.

Rules, strongest first (each sets ``rule`` and a confidence):
  explicit   a name with a speech verb next to the quotation (``said Holmes``, ``少安对他说：``)   0.95
  narrator   ``I said`` in a first-person book, when the narrator is known                          0.92
  pronoun    ``he said`` / ``她问``: the named subject of the paragraph, or the one conversation
             partner of that gender                                                                0.70-0.88
  beat       the paragraph's narration has the character as its subject (``Poirot nodded. "…"``)     0.80
  vocative   the previous speaker addressed them by name (``"…, Hastings?"``)                      0.72
  alternation in a two-person exchange, turns alternate; agreement from both sides counts more      0.45-0.85
  continued  a speech running on from the previous paragraph keeps its speaker
Anything else stays unknown. Quotations below the threshold are kept as narration in scenes.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from .context import Context, Tag

# Each rule's confidence is the share of its answers that were right on the novels it was tuned on (Emma,
# Oliver Twist, The Mysterious Affair at Styles; benchmarks/attribution.py).
CONF = {"explicit": 0.95, "explicit-ambiguous": 0.8, "narrator": 0.95, "beat": 0.7, "beat-before": 0.4,
        "reaction": 0.6, "narrator-beat": 0.7,
        "vocative": 0.8, "pronoun-paragraph": 0.6, "pronoun-partner": 0.65, "pronoun-recent": 0.65,
        "pronoun-beat": 0.5, "continued": 0.0}
_FIRST_PERSON_EN = re.compile(r"\b(?:I|me|my|myself)\b")
_FIRST_PERSON_ZH = re.compile(r"我")


@dataclass
class Attribution:
    """The speaker (a cast index) of one quotation, with the rule that chose it and how sure it is."""

    quote: int  # index into the context's quotations
    speaker: int | None = None
    confidence: float = 0.0
    rule: str = "unknown"


class Rules:
    """The language's tag finders (tags_en or tags_zh)."""

    def __init__(self, language: str):
        if language == "zh":
            from . import tags_zh as mod
        else:
            from . import tags_en as mod
        self.tag_after, self.tag_before, self.beat = mod.tag_after, mod.tag_before, mod.beat
        self.vocatives = mod.vocatives
        self.tag_next_line = mod.tag_next_line
        self.beat_from_previous_paragraph = language != "zh"  # there a short line before is the last one's tag


def find_narrator(ctx: Context, rules: Rules) -> int | None:
    """The cast member who narrates a first-person book: the one others address in the turns next to ``I said``."""
    pattern = _FIRST_PERSON_ZH if ctx.language == "zh" else _FIRST_PERSON_EN
    words = first = 0
    for p in range(len(ctx.paragraphs)):
        for a, b in ctx.narration_spans(p):
            seg = ctx.text[a:b]
            words += len(seg) if ctx.language == "zh" else seg.count(" ") + 1
            first += len(pattern.findall(seg))
    if words == 0 or first / words < (0.004 if ctx.language == "zh" else 0.012):
        return None
    votes: Counter = Counter()
    paras = sorted(ctx.by_paragraph)
    for n, p in enumerate(paras):
        for qi in ctx.by_paragraph[p]:
            tag = _local_tag(ctx, rules, qi)
            if tag is None or tag.kind != "narrator":
                continue
            for near in (paras[n - 1] if n else None, paras[n + 1] if n + 1 < len(paras) else None):
                if near is None or abs(near - p) > 1:
                    continue
                for qj in ctx.by_paragraph[near]:
                    for who in rules.vocatives(ctx, qj):
                        if len(who) == 1:
                            votes[who[0]] += 1
    if not votes:
        return None
    ranked = votes.most_common(2)
    top, n = ranked[0]
    second = ranked[1][1] if len(ranked) > 1 else 0
    return top if n >= 3 and n >= 2 * second else None


def _local_tag(ctx: Context, rules: Rules, qi: int) -> Tag | None:
    q = ctx.quotes[qi]
    para = ctx.paragraphs[q.paragraph]
    siblings = ctx.by_paragraph[q.paragraph]
    k = siblings.index(qi)
    limit = ctx.quotes[siblings[k + 1]].start - 1 if k + 1 < len(siblings) else para.end
    start = ctx.quotes[siblings[k - 1]].end + 1 if k else para.start
    tag = rules.tag_after(ctx, qi, limit) or rules.tag_before(ctx, start, q.start - 1)
    if tag is None and k == 0 and q.start - 1 <= para.start and q.paragraph and q.paragraph - 1 not in ctx.by_paragraph:
        prev = ctx.paragraphs[q.paragraph - 1]  # a lead-in paragraph: "…, and said, with some asperity:"
        tag = rules.tag_before(ctx, prev.start, prev.end)
    if tag is None and k == len(siblings) - 1:
        tag = rules.tag_next_line(ctx, qi)
    return tag


class Sieve:
    """Runs the rules over one source."""

    def __init__(self, ctx: Context, narrator: int | None = None, find_first_person: bool = True):
        self.ctx = ctx
        self.rules = Rules(ctx.language)
        self.narrator = narrator if narrator is not None else (find_narrator(ctx, self.rules) if find_first_person
                                                               else None)
        self.last_named: dict[int, int] = {}  # member -> position of their last unambiguous mention
        self.genders = [m.gender for m in ctx.cast.members]
        self.beats: dict[int, Tag | None] = {}

    def run(self) -> list[Attribution]:
        """One attribution per quotation, in order."""
        ctx = self.ctx
        out = [Attribution(i) for i in range(len(ctx.quotes))]
        paras = sorted(ctx.by_paragraph)
        speaker: dict[int, tuple[int | None, float, str]] = {}  # paragraph -> (who, confidence, rule)
        tags: dict[int, list[tuple[int, Tag]]] = {}
        for p in paras:  # 1. names, the narrator, beats
            tags[p] = [(qi, t) for qi in ctx.by_paragraph[p] if (t := _local_tag(ctx, self.rules, qi)) is not None]
            speaker[p] = self._strong(p, tags[p])
        runs = _runs(ctx, paras)
        for run in runs:  # 2. pronouns with the conversation's partners; 3. vocatives; 4. alternation
            self._pronouns(run, tags, speaker)
            self._vocatives(run, speaker)
            self._alternate(run, speaker)
        for p in paras:
            who, conf, rule = speaker[p]
            for qi in ctx.by_paragraph[p]:
                own = next((t for q, t in tags[p] if q == qi and t.kind == "name"), None)
                if own is not None and len(own.who) == 1 and own.who[0] != who:  # "'Yes,' said A. 'No,' said B."
                    out[qi] = Attribution(qi, own.who[0], CONF["explicit"], "explicit")
                else:
                    out[qi] = Attribution(qi, who, conf if who is not None else 0.0, rule if who is not None else
                                          "unknown")
        return out

    # -- 1. strong local evidence ------------------------------------------------------------------------
    def _strong(self, p: int, ptags: list[tuple[int, Tag]]) -> tuple[int | None, float, str]:
        ctx = self.ctx
        para = ctx.paragraphs[p]
        self._remember(ctx.paragraphs[p - 1].start if p else 0, para.start)
        first = ctx.quotes[ctx.by_paragraph[p][0]]
        for _, tag in ptags:
            if tag.kind == "name":
                who, ambiguous = self._pick(tag.who, tag.position)
                if not tag.verb:
                    return who, CONF["reaction"], "reaction"
                return who, CONF["explicit-ambiguous" if ambiguous else "explicit"], "explicit"
            if tag.kind == "narrator" and self.narrator is not None:
                return self.narrator, CONF["narrator"], "narrator"
        if first.continues:
            return None, 0.0, "continued"
        if any(t.kind in ("pronoun", "description", "narrator") for _, t in ptags):
            return None, 0.0, "pending"
        b = self.rules.beat(ctx, p)
        before = False
        if b is None and p and p - 1 not in ctx.by_paragraph and _short(ctx, p - 1) and \
                self.rules.beat_from_previous_paragraph:
            b, before = self.rules.beat(ctx, p - 1), True  # "Poirot smiled." on its own line, then the speech
        self.beats[p] = b
        if b is not None and b.kind == "name":
            who, ambiguous = self._pick(b.who, b.position)
            return who, CONF["beat-before" if before else "beat"] - (0.1 if ambiguous else 0), "beat"
        if b is not None and b.kind == "narrator" and self.narrator is not None:
            return self.narrator, CONF["narrator-beat"], "beat"
        return None, 0.0, "pending-beat" if b is not None else "unknown"

    def _remember(self, start: int, end: int) -> None:
        for m in self.ctx.mentions_in(start, end):
            if len(m.who) == 1:
                self.last_named[m.who[0]] = m.start

    def _pick(self, who: tuple[int, ...], position: int) -> tuple[int, bool]:
        """One member for a mention: itself, or of a shared form the one named most recently."""
        if len(who) == 1:
            return who[0], False
        best = max(who, key=lambda w: self.last_named.get(w, -1))
        return best, True

    # -- 2. pronouns ----------------------------------------------------------------------------------------
    def _pronouns(self, run: list[int], tags, speaker) -> None:
        for n, p in enumerate(run):
            who, conf, rule = speaker[p]
            if rule == "continued" and n and speaker[run[n - 1]][0] is not None:
                prev = speaker[run[n - 1]]
                speaker[p] = (prev[0], prev[1], "continued")
                continue
            if rule not in ("pending", "pending-beat"):
                continue
            tag = next((t for _, t in tags[p] if t.kind == "pronoun"), None)
            if tag is None:
                tag = next((t for _, t in tags[p] if t.kind == "description" and t.gender), None)
            beat = False
            if tag is None and rule == "pending-beat":
                tag = self.beats.get(p)
                beat = tag is not None and tag.kind == "pronoun"
                if not beat:
                    speaker[p] = (None, 0.0, "unknown")
                    continue
            if tag is None:
                speaker[p] = (None, 0.0, "unknown")
                continue
            found = self._resolve(tag, p, run, n, speaker)
            if found is None:
                speaker[p] = (None, 0.0, "unknown")
            else:
                who, conf, how = found
                if tag.kind == "description":
                    speaker[p] = (who, conf - 0.15, f"description-{how}")
                else:
                    speaker[p] = (who, conf * (0.8 if beat else 1.0), "pronoun-beat" if beat else f"pronoun-{how}")

    def _resolve(self, tag: Tag, p: int, run: list[int], n: int, speaker) -> tuple[int, float, str] | None:
        ctx = self.ctx
        g = tag.gender
        para = ctx.paragraphs[p]
        fits = lambda w: self.genders[w] == g  # noqa: E731
        # (a) a name in this paragraph's narration before the pronoun: the sentence subject first
        named = [m for m in ctx.narration_mentions(para.start, tag.position) if len(m.who) == 1 and fits(m.who[0])]
        if named:
            distinct = {m.who[0] for m in named}
            subject = named[0].who[0]
            return subject, CONF["pronoun-paragraph"] - (0.1 if len(distinct) > 1 else 0), "paragraph"
        # (b) the conversation's partners of that gender
        prev = [speaker[q][0] for q in run[:n] if speaker[q][0] is not None]
        last = prev[-1] if prev else None
        partners = [w for w in dict.fromkeys(reversed(prev)) if fits(w)]
        others = [w for w in partners if w != last]
        if others:
            return others[0], CONF["pronoun-partner"] - (0.1 if len(others) > 1 else 0), "partner"
        # (c) the last named character of that gender in the narration before
        lo = ctx.paragraphs[max(0, run[0] - 3)].start
        recent = [m for m in ctx.narration_mentions(lo, para.start) if len(m.who) == 1 and fits(m.who[0])]
        if recent:
            w = recent[-1].who[0]
            if w != last or len({m.who[0] for m in recent}) == 1:
                return w, CONF["pronoun-recent"], "recent"
        if last is not None and fits(last):
            return last, CONF["pronoun-recent"] - 0.1, "recent"
        return None

    # -- 3. vocatives ----------------------------------------------------------------------------------------
    def _vocatives(self, run: list[int], speaker) -> None:
        ctx = self.ctx
        for n in range(1, len(run)):
            p, prev = run[n], run[n - 1]
            if speaker[p][0] is not None:
                continue
            addressed = [w[0] for qi in ctx.by_paragraph[prev] for w in self.rules.vocatives(ctx, qi) if len(w) == 1]
            addressed = [w for w in dict.fromkeys(addressed) if w != speaker[prev][0]]
            if len(addressed) == 1:
                speaker[p] = (addressed[0], CONF["vocative"], "vocative")

    # -- 4. alternation ------------------------------------------------------------------------------------
    def _alternate(self, run: list[int], speaker) -> None:
        turns = [p for p in run]
        anchors = [(n, speaker[p][0]) for n, p in enumerate(turns) if speaker[p][0] is not None]
        if not anchors:
            return
        for n, p in enumerate(turns):
            if speaker[p][0] is not None:
                continue
            left = [a for a in anchors if a[0] < n][-2:]
            right = [a for a in anchors if a[0] > n][:2]
            fwd = _parity(left[::-1], n) if len(left) == 2 else None
            back = _parity(right, n) if len(right) == 2 else None
            if fwd is not None and back is not None:
                if fwd == back:
                    dist = min(n - left[-1][0], right[0][0] - n)
                    speaker[p] = (fwd, 0.9 if dist == 1 else 0.85, "alternation")
                else:
                    near = fwd if n - left[-1][0] <= right[0][0] - n else back
                    speaker[p] = (near, 0.45, "alternation")
                continue
            if fwd is not None or back is not None:
                guess = fwd if fwd is not None else back
                dist = n - left[-1][0] if fwd is not None else right[0][0] - n
                speaker[p] = (guess, max(0.4, 0.72 - 0.06 * (dist - 1)), "alternation")
                continue
            # one anchor on a side: the turns two, four... away are theirs in a two-person exchange
            same = {a for m, a in (left[-1:] + right[:1]) if (n - m) % 2 == 0}
            if len(same) == 1:
                speaker[p] = (same.pop(), 0.55, "alternation")


def _parity(pair: list[tuple[int, int]], n: int) -> int | None:
    """From the two nearest anchors on one side (nearest first), the speaker at turn ``n`` if turns alternate."""
    (n1, a), (n2, b) = pair
    if a == b or abs(n1 - n2) % 2 == 0:
        return None
    return a if abs(n - n1) % 2 == 0 else b


SHORT_NARRATION = 250  # a narration paragraph this short ("Poirot smiled.") does not end a conversation


def _short(ctx: Context, p: int) -> bool:
    para = ctx.paragraphs[p]
    return para.end - para.start < SHORT_NARRATION


def _runs(ctx: Context, paras: list[int]) -> list[list[int]]:
    """Conversations: paragraphs that hold quotations, with at most two short narration paragraphs between."""
    runs: list[list[int]] = []
    for p in paras:
        if runs and (p - runs[-1][-1] == 1 or (p - runs[-1][-1] <= 3 and
                                                all(_short(ctx, g) for g in range(runs[-1][-1] + 1, p)))):
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs
