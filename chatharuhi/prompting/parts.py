"""The parts a prompt is packed from, and what packing returns: the budget that shares the model's window, the ranked
scenes, lorebook entries and memory, the earlier turns, and the packed messages with their trace (``packing.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import (
    DEFAULT_CONTEXT_WINDOW,
    DEFAULT_HISTORY_TOKENS,
    DEFAULT_LORE_TOKENS,
    DEFAULT_MEMORY_TOKENS,
    DEFAULT_REPLY_RESERVE,
    DEFAULT_STORY_TOKENS,
)
from ..options import strict
from ..types import Message, Trace

__all__ = ["Budget", "HistoryTurn", "LoreUnit", "MemoryUnit", "Packed", "SceneUnit"]


@strict
@dataclass(frozen=True)
class Budget:
    """The model's window and how to share it."""

    context_window: int = DEFAULT_CONTEXT_WINDOW
    reply_reserve: int = DEFAULT_REPLY_RESERVE
    story_tokens: int = DEFAULT_STORY_TOKENS
    history_tokens: int = DEFAULT_HISTORY_TOKENS
    lore_tokens: int = DEFAULT_LORE_TOKENS
    memory_tokens: int = DEFAULT_MEMORY_TOKENS

    @property
    def prompt_tokens(self) -> int:
        """Tokens the prompt may use: the window minus the reply reserve."""
        return self.context_window - self.reply_reserve


@dataclass(frozen=True)
class SceneUnit:
    """A ranked scene, already rendered as it will appear in the story block."""

    id: str
    text: str
    score: float | None = None
    parent: str = ""  # the whole scene's id (a window's or a cut's scene); "" means ``id``
    span: tuple[int, int] | None = None  # a window's or a cut's lines in that scene

    def overlaps(self, other: "SceneUnit") -> bool:
        """Whether both come from the same scene and share lines (a whole scene shares all of its lines)."""
        if (self.parent or self.id) != (other.parent or other.id):
            return False
        return self.span is None or other.span is None or (
            self.span[0] <= other.span[1] and other.span[0] <= self.span[1])


@dataclass(frozen=True)
class LoreUnit:
    """A lorebook entry that fired, in budget order; ``order`` sets its place in the prompt."""

    id: str
    text: str
    order: int = 0
    key: str = ""


@dataclass(frozen=True)
class MemoryUnit:
    """Something the conversation remembers, in budget order: a pinned fact, the summary, or an earlier turn.

    ``turns``: the history turns a recalled one repeats; it is left out while any of them is in the history.
    ``order`` sets its place in the prompt (facts, the summary, then recalled turns oldest first)."""

    id: str
    text: str
    kind: str = "recalled"  # "fact" | "summary" | "recalled"
    turns: tuple[str, ...] = ()
    score: float | None = None
    order: int = 0


@dataclass(frozen=True)
class HistoryTurn:
    """An earlier exchange, rendered: the user's message and the character's reply.

    An empty ``assistant`` is a stretch of others' lines the character did not answer (a group chat): it joins
    the next user message."""

    id: str
    user: str
    assistant: str


@dataclass
class Packed:
    """The messages to send and the trace of how they were chosen."""

    messages: list[Message]
    trace: Trace
    scene_ids: list[str] = field(default_factory=list)  # in prompt order: the story, then the fresh scenes
    fresh_ids: list[str] = field(default_factory=list)  # the scenes that go with the query ("stable_story")
