"""What the attribution rules look at: the text, its paragraphs, quotations and the cast's mentions."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from .cast import Cast, Mention
from .quotes import Paragraph, Quotation


@dataclass(frozen=True)
class Tag:
    """Who a piece of narration says is speaking: a name, a pronoun, the narrator ("I") or a description."""

    kind: str  # "name" | "pronoun" | "narrator" | "description"
    position: int  # where the mention is in the text
    who: tuple[int, ...] = ()  # for a name: the members it can mean
    gender: str | None = None  # for a pronoun
    place: str = "after"  # "after" the quotation, "before" it, or a "beat" elsewhere in the paragraph
    verb: bool = True  # a speech verb goes with it


@dataclass
class Context:
    """A source's prose, indexed for the rules."""

    text: str
    language: str
    paragraphs: list[Paragraph]
    quotes: list[Quotation]
    cast: Cast
    mentions: list[Mention] = field(default_factory=list)
    by_paragraph: dict[int, list[int]] = field(default_factory=dict)  # paragraph -> indexes into quotes

    def __post_init__(self) -> None:
        if not self.mentions:
            self.mentions = self.cast.mentions(self.text)
        self._mstarts = [m.start for m in self.mentions]
        self._qstarts = [q.start for q in self.quotes]
        self.by_paragraph = {}
        for i, q in enumerate(self.quotes):
            self.by_paragraph.setdefault(q.paragraph, []).append(i)

    def mentions_in(self, start: int, end: int) -> list[Mention]:
        """The cast's mentions starting inside ``[start, end)``."""
        a = bisect.bisect_left(self._mstarts, start)
        b = bisect.bisect_left(self._mstarts, end)
        return self.mentions[a:b]

    def in_quote(self, pos: int) -> bool:
        """Whether ``pos`` lies inside a quotation."""
        i = bisect.bisect_right(self._qstarts, pos) - 1
        return i >= 0 and self.quotes[i].start <= pos < self.quotes[i].end

    def narration_mentions(self, start: int, end: int) -> list[Mention]:
        """Mentions in ``[start, end)`` outside quotations."""
        return [m for m in self.mentions_in(start, end) if not self.in_quote(m.start)]

    def paragraph_text(self, index: int) -> str:
        p = self.paragraphs[index]
        return self.text[p.start:p.end]

    def narration_spans(self, index: int) -> list[tuple[int, int]]:
        """The paragraph's stretches outside quotations (closing and opening marks excluded)."""
        p = self.paragraphs[index]
        spans, pos = [], p.start
        for qi in self.by_paragraph.get(index, []):
            q = self.quotes[qi]
            if q.start - 1 > pos:
                spans.append((pos, q.start - 1))
            pos = min(q.end + 1, p.end)
        if pos < p.end:
            spans.append((pos, p.end))
        return spans
