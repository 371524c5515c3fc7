"""Who speaks next in a group chat: the characters addressed first, then talkativeness; deterministic by seed.

For a user message, in the "natural" order (SillyTavern's default): the characters the message names (by name,
display name, speaker tag or alias) in the order it names them, then each other character joins in with its
talkativeness as the chance (rolled in member order, then shuffled), never the one who spoke last unless
addressed; if nobody would speak, one is drawn, weighted by talkativeness. "list": everyone in member order
(the last speaker moved to the end). "manual": only those addressed. After each reply, the characters it
addresses speak next. At most ``max_replies`` replies per user message; muted characters speak only when asked
by name (``speakers=``). The draws come from ``Random(f"{seed}:{round}")``: the same seed and conversation give
the same speakers, also after a reload.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

from ..config import DEFAULT_GROUP_REPLIES, DEFAULT_TALKATIVENESS, GROUP_ORDERS
from ..errors import InputError, UnknownOption

if TYPE_CHECKING:
    from ..character.folder import Character

_LATIN = re.compile(r"[A-Za-z0-9]")


@dataclass(frozen=True)
class Speaker:
    """A member as the turn order sees it: its name, every name it answers to, and its talkativeness."""

    name: str
    names: tuple[str, ...]
    talkativeness: float

    @classmethod
    def of(cls, character: "Character", talkativeness: float | None = None) -> "Speaker":
        """A character as a member: every name it answers to; ``talkativeness`` (None: its own, else the default)."""
        c = character
        level = c.manifest.talkativeness if talkativeness is None else talkativeness
        return cls(c.name, (c.name, c.display_name, c.speaker, *c.aliases),
                   DEFAULT_TALKATIVENESS if level is None else level)


def _pattern(names: Iterable[str]) -> re.Pattern[str] | None:
    """One pattern for a member's names: a latin name as a whole word (any case), a CJK one anywhere."""
    parts = []
    for name in sorted({n.strip() for n in names if n and n.strip()}, key=len, reverse=True):
        escaped = re.escape(name)
        parts.append(rf"(?<![A-Za-z0-9]){escaped}(?![A-Za-z0-9])" if _LATIN.search(name) else escaped)
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


class TurnOrder:
    """Plans who answers a message, and who answers a reply."""

    def __init__(self, speakers: Sequence[Speaker], *, order: str = "natural",
                 max_replies: int = DEFAULT_GROUP_REPLIES, seed: int = 0):
        if order not in GROUP_ORDERS:
            raise UnknownOption(order, "order=", GROUP_ORDERS, kind="value")
        if not isinstance(max_replies, int) or max_replies < 1:
            raise InputError(f"max_replies={max_replies!r}: a group answers each message with 1 reply or more")
        self.order, self.max_replies, self.seed = order, max_replies, seed
        self.set_speakers(speakers)

    def set_speakers(self, speakers: Sequence[Speaker]) -> None:
        """The members, in their order (after one joins or leaves)."""
        self.speakers = list(speakers)
        self._patterns = {s.name: _pattern(s.names) for s in self.speakers}

    def addressed(self, text: str, among: Iterable[str] | None = None) -> list[str]:
        """The members ``text`` names, in the order it first names them."""
        allowed = set(among) if among is not None else None
        found = []
        for s in self.speakers:
            pattern = self._patterns[s.name]
            if pattern is None or (allowed is not None and s.name not in allowed):
                continue
            m = pattern.search(text or "")
            if m:
                found.append((m.start(), s.name))
        return [name for _, name in sorted(found)]

    def plan(self, text: str, round_number: int, *, last: str | None, muted: Iterable[str] = ()) -> list[str]:
        """Who answers the user's message ``text`` (in round ``round_number``; ``last`` spoke last before it)."""
        muted = set(muted)
        active = [s for s in self.speakers if s.name not in muted]
        if not active:
            raise InputError("every character in the group is muted: unmute one, or name who speaks (speakers=)")
        called = self.addressed(text, [s.name for s in active])
        if self.order == "manual":
            if not called:
                names = ", ".join(s.name for s in active)
                raise InputError(f"the group's turn order is manual: name who answers (speakers=[...]), or address "
                                 f"one of {names} in the message")
            return called[: self.max_replies]
        if self.order == "list":
            queue = [s.name for s in active]
            if last in queue and len(queue) > 1:
                queue.remove(last)
                queue.append(last)
            return list(dict.fromkeys(called + queue))[: self.max_replies]
        rng = random.Random(f"{self.seed}:{round_number}")
        joined = [s.name for s in active if s.name not in called and s.name != last
                  and rng.random() < s.talkativeness]
        rng.shuffle(joined)
        queue = called + joined
        if not queue:
            pool = [s for s in active if s.name != last] or active
            weights = [max(s.talkativeness, 1e-6) for s in pool]
            queue = [rng.choices(pool, weights=weights)[0].name]
        return queue[: self.max_replies]

    def after(self, reply: str, speaker: str, queue: list[str], spoken: int, *, muted: Iterable[str] = ()) -> list[str]:
        """The queue once ``speaker`` said ``reply``: whom it addresses speak next (not itself, not muted), and the
        queue is cut to what ``max_replies`` leaves after ``spoken`` replies."""
        muted = set(muted)
        called = [n for n in self.addressed(reply) if n != speaker and n not in muted]
        rest = [n for n in queue if n not in called]
        merged = called + rest
        while merged and merged[0] == speaker:  # never the same twice in a row unless addressed
            merged.pop(0)
        return merged[: max(0, self.max_replies - spoken)]
