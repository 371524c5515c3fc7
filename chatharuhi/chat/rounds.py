"""A group chat's rounds: in memory and, with a session store, one stored turn per round; the one ``commit()``.

A group's session is a session like a one-to-one chat's: its ``character`` is the group's name (the members
joined by "+", as the HTTP server's model name), each round one turn whose reply reads as a transcript
(``春日:「……」`` lines) and whose trace holds the round itself (who spoke, what, who was present) with every
speaker's packing trace. So a group is listed, exported and deleted like any conversation.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable

from ..character.folder import Character
from ..errors import InputError, SessionError
from ..types import Round, Said, Turn

if TYPE_CHECKING:
    from ..sessions import Session, SessionStore

GROUP_SEPARATOR = "+"


def group_key(names: list[str]) -> str:
    """The group's name: its members joined by "+" (``haruhi+wukong``)."""
    return GROUP_SEPARATOR.join(names)


def is_group_key(name: str) -> bool:
    """Whether a session's character names a group."""
    return GROUP_SEPARATOR in (name or "")


def round_record(rnd: Round, traces: dict[str, Any] | None = None) -> dict:
    """The round as its stored turn's trace keeps it."""
    return {"group": {"present": list(rnd.present), "replies": [{"speaker": s.speaker, "text": s.text}
                                                                for s in rnd.replies],
                      "traces": traces or {}}}


def round_from(record: dict, character: str = "") -> Round:
    """A round read back from its stored turn (``export_records`` shape). A turn with no group part is a
    one-to-one chat's (``character``'s, when that names one character); in a group's session it is an error
    naming the turn."""
    group = (record.get("trace") or {}).get("group")
    if group is None and character and not is_group_key(character):
        return Round(record["user_role"], record["text"], (Said(character, record["reply"]),), (character,))
    try:
        replies = tuple(Said(str(r["speaker"]), str(r["text"])) for r in group["replies"])
        present = tuple(str(p) for p in group["present"])
    except (TypeError, KeyError) as exc:
        raise SessionError(f"turn {record.get('index')} of the group session has no readable round ({exc!r}); "
                           "it was not written by a group chat") from None
    return Round(record["user_role"], record["text"], replies, present)


def members_of(store: "SessionStore", saved: "Session", characters: Any = None) -> list[str]:
    """The members of a stored conversation: those present in its last round (else the session's name; a
    one-to-one chat resumes as a group of one). ``characters``, when given, must be those."""
    records = store.export_records(saved.id)
    last = records[-1] if records else None
    names = list(round_from(last, saved.character).present) if last else saved.character.split("+")
    if characters:
        given = sorted(c.name if isinstance(c, Character) else str(c) for c in characters)
        if given != sorted(names):
            raise SessionError(f"session {saved.id} is a conversation with {'+'.join(names)!r}, not "
                               f"{'+'.join(given)!r}: leave out the characters to resume it")
    return names


class Rounds:
    """The rounds of one group conversation, and the session they are stored in."""

    def __init__(self, transcript: Callable[[Round], str], *, store: "SessionStore | None" = None,
                 session: "Session | None" = None, key: str = "", user_role: str = ""):
        """``transcript``: a round's replies as its stored turn reads; ``key``: the group's name for a new
        session."""
        self.store, self.session = store, session
        self._transcript, self.key, self.user_role = transcript, key, user_role
        self._rounds: list[Round] = []
        self.traces: list[dict[str, Any]] = []  # each round's speakers' packing traces, by speaker
        self.lock = threading.RLock()

    @property
    def session_id(self) -> str | None:
        """The stored conversation (None before the first round, or without a store)."""
        return self.session.id if self.session is not None else None

    @property
    def rounds(self) -> list[Round]:
        """The committed rounds, oldest first (a copy)."""
        with self.lock:
            return list(self._rounds)

    def __len__(self) -> int:
        with self.lock:
            return len(self._rounds)

    def ensure_session(self) -> str | None:
        """The stored conversation's id, started now (with no rounds) if there is a store and none yet."""
        with self.lock:
            if self.store is not None and self.session is None:
                self.session = self.store.create(self.key, self.user_role)
            return self.session_id

    def reload(self) -> None:
        """Read the rounds again from the store."""
        if self.store is None or self.session is None:
            return
        records = self.store.export_records(self.session.id)
        with self.lock:
            self._rounds = [round_from(r, self.session.character) for r in records]
            self.traces = [((r.get("trace") or {}).get("group") or {}).get("traces") or {} for r in records]

    def replace(self, rounds: list[Round]) -> None:
        """Hold ``rounds`` in memory (a conversation loaded from a file)."""
        with self.lock:
            self._rounds, self.traces = list(rounds), [{} for _ in rounds]

    def commit(self, rnd: Round, traces: dict[str, Any]) -> None:
        """Append a finished round: to the store first (creating the session on the first round), then to memory."""
        if not rnd.replies:
            raise InputError("a round with no reply is not kept")
        with self.lock:
            if self.store is not None:
                self.ensure_session()
                self.store.append_turn(self.session.id, Turn(rnd.user_role, rnd.text, self._transcript(rnd)),
                                       round_record(rnd, traces))
            self._rounds.append(rnd)
            self.traces.append(traces)

    def undo(self) -> Round:
        """Delete the last round (kept, flagged as deleted, in a session store) and return it."""
        with self.lock:
            if not self._rounds:
                raise InputError("nothing to undo: the group has not spoken yet")
            if self.store is not None and self.session is not None:
                self.store.delete_last_turn(self.session.id)
            self.traces.pop()
            return self._rounds.pop()

    def reset(self) -> None:
        """Forget the rounds; with a store, the next round starts a new session (the old one is kept)."""
        with self.lock:
            self._rounds, self.traces, self.session = [], [], None
