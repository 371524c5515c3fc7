"""Regenerate, swipe, undo and edit: the operations on a chatbot's committed turns (mixed into ``ChatHaruhi``).

Each keeps memory and the session store in step: the store is written first, so a failed write leaves
both unchanged.
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from ..types import Turn
from .reply import Plan, Reply


class ConversationEdits:
    """``regenerate``, ``alternatives``, ``undo`` and ``edit_last`` over ``ChatHaruhi``'s history."""

    def regenerate(self, **options: Any) -> Reply:
        """Answer the last user message again; the old reply is kept as an alternative ("swipe")."""
        with self._lock:
            if not self._history:
                raise InputError("nothing to regenerate: the conversation has no turns yet")
            n, last, earlier = len(self._history), self._history[-1], self._history[:-1]
        plan = self.prepare(last.text, last.user_role, history=earlier)
        return Reply(self, plan, self._options(plan, options), commit=lambda p, text: self._replace_last(n, p, text))

    def _replace_last(self, n: int, plan: Plan, reply: str) -> None:
        with self._lock:
            if len(self._history) != n:
                raise InputError("the conversation changed while regenerating; the new reply was not kept")
            old = self._history[-1]
            if self.sessions is not None and self.session is not None:
                self.sessions.add_alternative(self.session.id, n - 1, reply, plan.trace.as_dict())
            turn = Turn(old.user_role, old.text, reply)
            self._history[-1], self._rendered[-1] = turn, self._render(n - 1, turn)
            self._alternatives.setdefault(n - 1, [old.reply]).append(reply)
            self.last_trace = plan.trace

    def alternatives(self, index: int = -1) -> list[str]:
        """Every reply turn ``index`` has had, oldest first; the last one is current."""
        with self._lock:
            if not self._history:
                raise InputError("the conversation has no turns yet")
            index = index + len(self._history) if index < 0 else index
            if not 0 <= index < len(self._history):
                raise InputError(f"no turn {index}: the conversation has {len(self._history)}")
            if self.sessions is not None and self.session is not None:
                return self.sessions.alternatives(self.session.id, index)
            return list(self._alternatives.get(index, [self._history[index].reply]))

    def undo(self) -> Turn:
        """Delete the last turn (kept, flagged as deleted, in a session store) and return it."""
        with self._lock:
            if not self._history:
                raise InputError("nothing to undo: the conversation has no turns yet")
            if self.sessions is not None and self.session is not None:
                self.sessions.delete_last_turn(self.session.id)
            self._rendered.pop()
            self._alternatives.pop(len(self._history) - 1, None)
            return self._history.pop()

    def edit_last(self, text: str) -> None:
        """Replace what the user said in the last turn (call ``regenerate()`` to have it answered anew)."""
        if not isinstance(text, str) or not text.strip():
            raise InputError("empty message: the edited text must not be blank")
        with self._lock:
            if not self._history:
                raise InputError("nothing to edit: the conversation has no turns yet")
            if self.sessions is not None and self.session is not None:
                self.sessions.edit_last_turn(self.session.id, text)
            old, n = self._history[-1], len(self._history)
            turn = Turn(old.user_role, text.strip(), old.reply)
            self._history[-1], self._rendered[-1] = turn, self._render(n - 1, turn)
            self._alternatives.pop(n - 1, None)
