"""The session store contract: what every store (SQLite, PostgreSQL) keeps and promises.

Turns are append-only. Regenerating a reply adds a reply (the newest is current, the older ones are
kept as alternatives, "swipes"); editing the last user message adds a turn that supersedes the old
one; deleting the last turn sets a flag. A turn is written in one transaction when its reply
completes, so a crash mid-reply loses at most the reply that was being streamed, never a saved turn.

``SessionStore(target)`` opens the implementation that fits ``target``: a file path opens SQLite, a
``postgresql://`` URL opens PostgreSQL; with no target, ``$CHATHARUHI_STORE`` decides, else the home
folder's SQLite file.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ..config import ENV_STORE
from ..errors import SessionError
from ..options import strict
from ..types import Fact, Turn

SESSION_FORMAT = "chatharuhi.session/1"
POSTGRES_URL_PREFIXES = ("postgresql://", "postgres://")


@strict
@dataclass(frozen=True)
class Session:
    """One saved conversation: who speaks (character, user's in-story name), its title and times."""

    id: str
    character: str
    user_role: str
    title: str | None
    created: float
    updated: float

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


def default_target() -> str | None:
    """``$CHATHARUHI_STORE`` (a SQLite file or a postgresql:// URL), or None for the home folder's file."""
    return os.environ.get(ENV_STORE) or None


class SessionStore(ABC):
    """Sessions and their turns; safe to share between threads (and processes, through the database)."""

    # The implementations by what a target looks like: "postgresql" for a postgresql:// URL, "file" for the rest.
    # Each registers itself by declaring ``kind`` (sessions/__init__.py imports both, before any store is opened).
    kind: str | None = None
    _kinds: dict[str, type[SessionStore]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind is not None:
            SessionStore._kinds[cls.kind] = cls

    def __new__(cls, *args: Any, **kwargs: Any) -> SessionStore:
        # ``SessionStore(path)`` keeps meaning "open the store at path": the contract picks its implementation
        if cls is SessionStore:
            target = args[0] if args else kwargs.get("path")
            target = default_target() if target is None else target
            postgres = isinstance(target, str) and target.strip().lower().startswith(POSTGRES_URL_PREFIXES)
            cls = SessionStore._kinds["postgresql" if postgres else "file"]
        return super().__new__(cls)

    # -- sessions ------------------------------------------------------------------------------------
    @abstractmethod
    def create(self, character: str, user_role: str, title: str | None = None) -> Session:
        """Start an empty session."""

    @abstractmethod
    def get(self, session_id: str) -> Session:
        """The session with this id; ``SessionNotFound`` if there is none."""

    @abstractmethod
    def list(self, character: str | None = None, limit: int = 100) -> list[Session]:
        """Sessions, most recently updated first, optionally of one character only."""

    @abstractmethod
    def rename(self, session_id: str, title: str) -> None:
        """Set the session's title."""

    @abstractmethod
    def delete(self, session_id: str) -> None:
        """Remove the session and all its turns for good."""

    # -- turns ---------------------------------------------------------------------------------------
    @abstractmethod
    def append_turn(self, session_id: str, turn: Turn, trace: dict | None = None) -> int:
        """Add a completed turn (and its trace) in one transaction; returns its index."""

    @abstractmethod
    def add_alternative(self, session_id: str, index: int, reply: str, trace: dict | None = None) -> None:
        """A regenerated reply for turn ``index`` (negative counts from the end): it becomes current."""

    @abstractmethod
    def turns(self, session_id: str) -> list[Turn]:
        """The live turns with their current replies, in order."""

    @abstractmethod
    def alternatives(self, session_id: str, index: int) -> list[str]:
        """Every reply turn ``index`` has had, oldest first; the last one is current."""

    @abstractmethod
    def trace(self, session_id: str, index: int) -> dict | None:
        """The stored trace of turn ``index``'s current reply (``None`` if it has none)."""

    @abstractmethod
    def chosen(self, session_id: str, index: int) -> int:
        """The position, in ``alternatives()``, of turn ``index``'s current reply."""

    @abstractmethod
    def select_alternative(self, session_id: str, index: int, n: int) -> str:
        """Make reply ``n`` (a position in ``alternatives()``) current for turn ``index`` ("swipe"); returns it.
        The list keeps its order and no reply is lost."""

    @abstractmethod
    def delete_turn(self, session_id: str, index: int) -> None:
        """Hide turn ``index`` (its rows stay stored, flagged as deleted); later turns move up one."""

    @abstractmethod
    def edit_turn(self, session_id: str, index: int, *, text: str | None = None, reply: str | None = None) -> None:
        """Replace the user's text of turn ``index`` (a new row supersedes the old, its replies carried over)
        and/or its reply (added as the newest alternative); the turns after it stay as they are."""

    def delete_last_turn(self, session_id: str) -> None:
        """Hide the last turn (its rows stay stored, flagged as deleted)."""
        self.delete_turn(session_id, -1)

    def edit_last_turn(self, session_id: str, text: str) -> None:
        """Replace the user's text of the last turn (a new row supersedes the old; its current reply is kept)."""
        self.edit_turn(session_id, -1, text=text)

    @abstractmethod
    def export_records(self, session_id: str) -> list[dict[str, Any]]:
        """The live turns as export records: index, user_role, text, reply, alternatives, created, trace."""

    # -- memory (chat/memory.py): pinned facts, rolling summaries, the vectors of the turns' messages ---------
    @abstractmethod
    def facts(self, session_id: str) -> list[Fact]:
        """The session's pinned facts, oldest first (``character`` "" : everyone's)."""

    @abstractmethod
    def add_fact(self, session_id: str, text: str, character: str = "") -> Fact:
        """Pin a fact to the session (for one character of a group, or "" for everyone)."""

    @abstractmethod
    def edit_fact(self, session_id: str, fact_id: str, text: str) -> Fact:
        """Replace a pinned fact's text."""

    @abstractmethod
    def delete_fact(self, session_id: str, fact_id: str) -> None:
        """Unpin a fact."""

    @abstractmethod
    def summaries(self, session_id: str) -> dict[str, tuple[str, int]]:
        """Each character's rolling summary: ``{character: (text, turns it covers)}``."""

    @abstractmethod
    def set_summary(self, session_id: str, character: str, text: str, upto: int) -> None:
        """Keep ``character``'s newest summary, covering the session's first ``upto`` turns."""

    @abstractmethod
    def memory_vectors(self, session_id: str, embedder_id: str) -> dict[str, bytes]:
        """The stored vectors of the session's messages, by the hash of the text they embed (raw float32 bytes)."""

    @abstractmethod
    def add_memory_vectors(self, session_id: str, embedder_id: str, vectors: dict[str, bytes]) -> None:
        """Store message vectors (one already stored is kept)."""

    @abstractmethod
    def clear_memory_vectors(self, session_id: str, embedder_id: str) -> None:
        """Forget the session's message vectors for one embedder (a damaged index, before it is rebuilt)."""

    # -- export --------------------------------------------------------------------------------------
    def export(self, session_id: str, format: Literal["json", "jsonl"] = "json") -> str:
        """The session, its memory (pinned facts, summaries) and its live turns (with alternatives and traces) as
        JSON, or JSONL (header line first)."""
        if format not in ("json", "jsonl"):
            raise SessionError(f"unknown export format {format!r}: use 'json' or 'jsonl'")
        session = self.get(session_id)
        records = self.export_records(session_id)
        memory = {"facts": [asdict(f) for f in self.facts(session_id)],
                  "summaries": [{"character": c, "text": t, "turns": n}
                                for c, (t, n) in sorted(self.summaries(session_id).items())]}
        header = {"format": SESSION_FORMAT, "session": session.as_dict(), "memory": memory}
        if format == "json":
            return json.dumps({**header, "turns": records}, ensure_ascii=False, indent=1)
        return "\n".join(json.dumps(x, ensure_ascii=False) for x in [header, *records]) + "\n"

    # -- lifecycle -----------------------------------------------------------------------------------
    @abstractmethod
    def close(self) -> None:
        """Close the store (idempotent)."""

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_edit(text: str | None, reply: str | None) -> None:
    """The arguments of ``edit_turn``: at least one, and neither blank."""
    for what, value in (("message", text), ("reply", reply)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise SessionError(f"the edited {what} is empty")
    if text is None and reply is None:
        raise SessionError("nothing to edit: pass text= or reply=")


def open_session(session: "str | Session | None", sessions: "SessionStore | None"):
    """The store and the saved session to resume (a store is opened in the home folder if only an id is given)."""
    if session is None and sessions is None:
        return None, None
    store = sessions if sessions is not None else SessionStore()
    if session is None:
        return store, None
    return store, store.get(session.id if isinstance(session, Session) else str(session))
