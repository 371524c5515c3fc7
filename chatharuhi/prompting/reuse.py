"""Story reuse: keep a conversation's story across turns, so that a model's KV cache keeps the prompt's prefix.

Retrieving afresh on every turn changes the story block, and everything after it is read again: with the
full budgets that is 1,500 tokens of scenes per turn, whatever the cache holds. With reuse the story has
two parts (packing's "stable_story" layout): a kept part in the system message, and a fresh part, the
message's best other scenes, read with the message. A turn's kept part is remembered under the
conversation up to its message; the next turn of that conversation keeps it (and the history starting at
the same turn) while it shares lines with a story retrieved afresh for the new message; otherwise the
freshly retrieved scenes replace it (a re-base). Either way the message's best scenes are in
the prompt: in the kept part or in the fresh one.

The key is the conversation itself, not the chatbot, so a stateless caller (the HTTP server, which gets
the whole conversation on every request) and ``regenerate`` behave as the chatbot's own history does.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

from ..config import STORY_MEMORY
from .packing import HistoryTurn, Packed, SceneUnit
from .tokens import TokenCounter


@dataclass(frozen=True)
class Kept:
    """What a turn put in its prompt that the next turn may keep: its story and its first history turn."""

    scenes: tuple[SceneUnit, ...]
    first_turn: str | None


def conversation_key(turns: Sequence[HistoryTurn], query: str) -> str:
    """A digest of the rendered conversation up to and including ``query`` (the user's line)."""
    digest = hashlib.sha256()
    for turn in turns:
        digest.update(turn.user.encode("utf-8") + b"\0" + turn.assistant.encode("utf-8") + b"\0")
    digest.update(query.encode("utf-8"))
    return digest.hexdigest()


def relevant(kept: Sequence[SceneUnit], fresh: Sequence[SceneUnit], counter: TokenCounter, budget: int) -> bool:
    """Whether the kept story shares lines with a scene that a fresh story of ``budget`` tokens would hold
    (``fresh`` in rank order, filled as the packer fills it)."""
    used = 0
    for unit in fresh:
        cost = counter.count(unit.text)
        if used + cost > budget:
            continue
        used += cost
        if any(k.overlaps(unit) for k in kept):
            return True
    return False


class StoryMemory:
    """The stories of the last ``size`` conversation turns, by conversation (thread-safe, least recent out)."""

    def __init__(self, size: int = STORY_MEMORY):
        self.size = size
        self._kept: OrderedDict[str, Kept] = OrderedDict()
        self._lock = threading.Lock()

    def recall(self, turns: Sequence[HistoryTurn]) -> Kept | None:
        """What the turn that produced the newest of ``turns`` put in its prompt, if remembered."""
        if not turns:
            return None
        key = conversation_key(turns[:-1], turns[-1].user)
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                self._kept.move_to_end(key)
            return kept

    def remember(self, turns: Sequence[HistoryTurn], query: str, scenes: Sequence[SceneUnit], packed: Packed) -> None:
        """Remember the kept story ``packed`` holds (its units from ``scenes``) for the turn after ``query``."""
        included = set(packed.scene_ids) - set(packed.fresh_ids)
        first = next((t.id for t in packed.trace.turns if t.included), None)
        kept = Kept(tuple(s for s in scenes if s.id in included), first)
        with self._lock:
            self._kept[conversation_key(turns, query)] = kept
            self._kept.move_to_end(conversation_key(turns, query))
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)
