"""A conversation's committed turns: in memory and, with a session store, on disk; the one ``commit()``.

Every writer of a finished turn calls ``History.commit`` (the chatbot, ChatHaruhi's ``append_response``, the
HTTP server and the web demo's "keep the partial reply"). The store is written first: if that write fails,
memory is unchanged too.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable, Iterable

from ..errors import InputError, SessionError
from ..prompting.packing import HistoryTurn
from ..types import Turn

if TYPE_CHECKING:
    from ..sessions import Session, SessionStore

Render = Callable[[int, Turn], HistoryTurn]


class History:
    """Turns, their rendered lines (each rendered once), every reply a turn has had, and the session they live in."""

    def __init__(self, render: Render | None = None, *, store: "SessionStore | None" = None,
                 session: "Session | None" = None, session_id: str | None = None,
                 character: str | None = None, user_role: str | None = None):
        """``store`` and ``session`` (or ``session_id``): where turns are written; without a session, the first
        commit creates one for ``character`` and ``user_role``. ``render``: how a turn reads in a prompt."""
        self.store, self.session = store, session
        self._session_id = session.id if session is not None else session_id
        self.character, self.user_role = character, user_role
        self._render = render
        self._turns: list[Turn] = []
        self._rendered: list[HistoryTurn] = []
        self._alternatives: dict[int, list[str]] = {}  # turn index -> every reply it has had (no store)
        self.lock = threading.RLock()

    @property
    def session_id(self) -> str | None:
        """The stored conversation these turns belong to (None before the first commit, or without a store)."""
        return self._session_id

    @property
    def turns(self) -> list[Turn]:
        """The committed turns, oldest first (a copy)."""
        with self.lock:
            return list(self._turns)

    @property
    def rendered(self) -> list[HistoryTurn]:
        """The committed turns as prompt lines (a copy)."""
        with self.lock:
            return list(self._rendered)

    def render(self, turns: Iterable[Turn]) -> list[HistoryTurn]:
        """Other turns (a stateless caller's conversation) rendered the same way."""
        return [self._render_one(i, t) for i, t in enumerate(turns)]

    def _render_one(self, i: int, turn: Turn) -> HistoryTurn:
        if self._render is None:
            return HistoryTurn(str(i), turn.text, turn.reply)
        return self._render(i, turn)

    def __len__(self) -> int:
        with self.lock:
            return len(self._turns)

    def replace(self, turns: Iterable[Turn]) -> None:
        """Hold ``turns`` in memory (what the store already has, or a conversation loaded from a file)."""
        with self.lock:
            self._turns = list(turns)
            self._rendered = self.render(self._turns)
            self._alternatives.clear()

    def reload(self) -> None:
        """Read the turns again from the store (another tab or process may have changed them)."""
        if self.store is not None and self._session_id is not None:
            self.replace(self.store.turns(self._session_id))

    def reset(self) -> None:
        """Forget the turns; with a store, the next commit starts a new session (the old one is kept)."""
        with self.lock:
            self._turns.clear()
            self._rendered.clear()
            self._alternatives.clear()
            self.session, self._session_id = None, None

    # -- writing -----------------------------------------------------------------------------------
    def ensure_session(self, user_role: str | None = None) -> str | None:
        """The stored conversation's id, started now (with no turns) if there is a store and none yet."""
        with self.lock:
            if self.store is not None and self._session_id is None:
                if self.character is None:
                    raise SessionError("cannot start a stored conversation without its character's name")
                self.session = self.store.create(self.character, self.user_role or user_role or "user")
                self._session_id = self.session.id
            return self._session_id

    def commit(self, turn: Turn, trace: dict | None = None) -> None:
        """Append a finished turn: to the store first (creating the session on the first turn), then to memory."""
        with self.lock:
            if self.store is not None:
                self.ensure_session(turn.user_role)
                self.store.append_turn(self._session_id, turn, trace)
            self._rendered.append(self._render_one(len(self._turns), turn))
            self._turns.append(turn)

    def commit_alternative(self, reply: str, trace: dict | None = None, *, expect: int | None = None) -> None:
        """A new reply for the last turn (regenerate, a swipe, a kept partial one); the old one stays an alternative.

        ``expect``: the number of turns the caller saw; if the conversation changed since, nothing is kept."""
        with self.lock:
            n = len(self._turns)
            if expect is not None and n != expect:
                raise InputError("the conversation changed while regenerating; the new reply was not kept")
            if self.store is not None and self._session_id is not None:
                self.store.add_alternative(self._session_id, -1 if n == 0 else n - 1, reply, trace)
            if n == 0:
                return
            old = self._turns[-1]
            turn = Turn(old.user_role, old.text, reply)
            self._turns[-1], self._rendered[-1] = turn, self._render_one(n - 1, turn)
            self._alternatives.setdefault(n - 1, [old.reply]).append(reply)

    def extend_last(self, reply: str, *, expect: int | None = None) -> None:
        """The last reply, continued (``Chatbot.continue_reply``): replaced in place by its longer self.

        ``expect``: the number of turns the caller saw; if the conversation changed since, nothing is kept."""
        with self.lock:
            n = len(self._turns)
            if not n or (expect is not None and n != expect):
                raise InputError("the conversation changed while the reply went on; the longer reply was not kept")
            if self.store is not None and self._session_id is not None:
                self.store.edit_turn(self._session_id, n - 1, reply=reply)
            old = self._turns[-1]
            turn = Turn(old.user_role, old.text, reply)
            self._turns[-1], self._rendered[-1] = turn, self._render_one(n - 1, turn)
            if n - 1 in self._alternatives:
                self._alternatives[n - 1][-1] = reply

    def alternatives(self, index: int = -1) -> list[str]:
        """Every reply turn ``index`` has had, oldest first; the last one is current."""
        with self.lock:
            if not self._turns:
                raise InputError("the conversation has no turns yet")
            index = index + len(self._turns) if index < 0 else index
            if not 0 <= index < len(self._turns):
                raise InputError(f"no turn {index}: the conversation has {len(self._turns)}")
            if self.store is not None and self._session_id is not None:
                return self.store.alternatives(self._session_id, index)
            return list(self._alternatives.get(index, [self._turns[index].reply]))

    def undo(self) -> Turn:
        """Delete the last turn (kept, flagged as deleted, in a session store) and return it."""
        with self.lock:
            if not self._turns:
                raise InputError("nothing to undo: the conversation has no turns yet")
            if self.store is not None and self._session_id is not None:
                self.store.delete_last_turn(self._session_id)
            self._rendered.pop()
            self._alternatives.pop(len(self._turns) - 1, None)
            return self._turns.pop()

    def edit_last(self, text: str) -> None:
        """Replace what the user said in the last turn."""
        if not isinstance(text, str) or not text.strip():
            raise InputError("empty message: the edited text must not be blank")
        with self.lock:
            if not self._turns:
                raise InputError("nothing to edit: the conversation has no turns yet")
            if self.store is not None and self._session_id is not None:
                self.store.edit_last_turn(self._session_id, text)
            old, n = self._turns[-1], len(self._turns)
            turn = Turn(old.user_role, text.strip(), old.reply)
            self._turns[-1], self._rendered[-1] = turn, self._render_one(n - 1, turn)
            self._alternatives.pop(n - 1, None)
