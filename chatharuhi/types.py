"""Small value types shared by the pipeline: lines, scenes, turns, messages and the packing trace."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Literal

from .options import strict

LineKind = Literal["speech", "narration", "other"]
Role = Literal["system", "user", "assistant"]


@strict
@dataclass(frozen=True)
class Line:
    """One parsed line of a scene: a speaker's words, narration, or text in no known format."""

    kind: LineKind
    text: str
    speaker: str = ""
    action: str = ""  # stage direction after the closing bracket
    lineno: int = 0


@strict
@dataclass(frozen=True)
class Scene:
    """One canonical scene of a character: the raw text and its parsed lines."""

    id: str  # file name relative to texts/, unique within a character; a window: "<scene id>#<a>-<b>"
    text: str
    lines: tuple[Line, ...] = ()
    source: str = ""  # for a window of a long scene (windows.py): the id of the whole scene
    span: tuple[int, int] | None = None  # for a window: its first and last line in the scene's text (1-based)

    @property
    def parent(self) -> str:
        """The id of the whole scene (the scene's own id unless this is a window of it)."""
        return self.source or self.id

    @cached_property
    def content_hash(self) -> str:
        """SHA-256 of the scene text: the key of its cached embedding."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def speakers(self) -> set[str]:
        """Names that speak in this scene."""
        return {line.speaker for line in self.lines if line.kind == "speech" and line.speaker}


@strict
@dataclass(frozen=True)
class Message:
    """One chat message as sent to a backend."""

    role: Role
    content: str

    def as_dict(self) -> dict[str, str]:
        """The OpenAI wire form ``{"role": ..., "content": ...}``."""
        return {"role": self.role, "content": self.content}


@strict
@dataclass(frozen=True)
class Turn:
    """One completed exchange: what the user said (as ``user_role``) and the character's reply."""

    user_role: str
    text: str
    reply: str


@strict
@dataclass(frozen=True)
class Said:
    """One character's words in a group chat: ``speaker`` is the character's name (its folder's)."""

    speaker: str
    text: str


@strict
@dataclass(frozen=True)
class Round:
    """A group chat's round: the user's message ("" when a character was asked to speak unprompted), the replies
    it got in order, and who was present (the characters who heard it)."""

    user_role: str
    text: str
    replies: tuple[Said, ...]
    present: tuple[str, ...]


@strict
@dataclass(frozen=True)
class Fact:
    """A fact the user pinned to a conversation's memory; ``character`` "" means everyone in it (a group)."""

    id: str
    text: str
    character: str = ""


@strict
@dataclass(frozen=True)
class ScoredScene:
    """A retrieved scene with its hybrid score and the two scores it was made of."""

    scene: Scene
    score: float
    dense: float = 0.0
    lexical: float = 0.0


@dataclass
class PartTrace:
    """What happened to one candidate scene or history turn during packing."""

    id: str
    tokens: int
    included: bool
    reason: str = ""  # why it was dropped: "over budget", "near-duplicate", ...
    score: float | None = None
    key: str = ""  # lorebook entries: the key that fired it ("constant" for constant entries); memory: its kind


@strict
@dataclass
class Trace:
    """Where every token of a packed prompt went, and what was left out and why."""

    budget: int  # prompt tokens allowed (context window minus reply reserve)
    total_tokens: int = 0  # exact count of the packed messages by the backend's counter
    parts: dict[str, int] = field(default_factory=dict)  # part name -> tokens
    story_budget: int = 0
    history_budget: int = 0
    scenes: list[PartTrace] = field(default_factory=list)
    turns: list[PartTrace] = field(default_factory=list)
    lore_budget: int = 0
    lore: list[PartTrace] = field(default_factory=list)  # lorebook entries that fired, kept or dropped
    memory_budget: int = 0
    memory: list[PartTrace] = field(default_factory=list)  # pinned facts, the summary, recalled turns (and notes)
    timings_ms: dict[str, float] = field(default_factory=dict)  # embed / retrieve / pack (+ prefill, first_token)
    reused_tokens: int | None = None  # prompt tokens a local model's KV cache still held: not read again
    model_prompt_tokens: int | None = None  # what a local model was given: the packed prompt + the reply's prefill
    story_kept: bool | None = None  # story reuse (reuse.py): the previous turn's story was kept; None: reuse off

    @property
    def included_scenes(self) -> list[str]:
        """Ids of the scenes that made it into the prompt, in prompt order."""
        return [s.id for s in self.scenes if s.included]

    @property
    def story_fill(self) -> float:
        """Fraction of the story budget that was used."""
        return self.parts.get("story", 0) / self.story_budget if self.story_budget else 0.0

    def as_dict(self) -> dict:
        """A JSON-ready copy."""
        data = asdict(self)
        data["included_scenes"] = self.included_scenes
        data["story_fill"] = self.story_fill
        return data
