"""What the page shows of a stored chat: its bubbles (the greeting first), the swipe counter over the last reply,
the "why this reply" panel of the last reply, and the tab marked as showing the chat as stored; a tab showing an
older view than the store is refused (``Stale``), with the chat reloaded."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from .render import bubble
from .state import Tab, View
from .trace import trace_view

if TYPE_CHECKING:
    from ..sessions import SessionStore
    from .characters import Shelf


class Stale(InputError):
    """The chat changed in another tab since this one showed it."""

    def __init__(self, view: View):
        self.view = view
        super().__init__("this chat was changed in another tab, so it has been reloaded here; nothing was "
                         "changed — your text is still in the box: apply it again if you still want it")


class Transcript:
    """The stored chats as the page shows them, over the session store and the characters' shelf."""

    def __init__(self, sessions: "SessionStore", shelf: "Shelf"):
        self.sessions, self.shelf = sessions, shelf
        self.cut: dict[Any, int] = {}  # session id -> the length limit that cut its last reply (shown, not stored)

    def messages(self, tab: Tab) -> list[dict]:
        """The chat as the page shows it: greeting, then each turn as two named bubbles."""
        if not tab.character:
            return []
        name = self.shelf.display_name(tab.character)
        greeting = self.shelf.greeting(tab.character)
        msgs = [{"role": "assistant", "content": bubble(name, greeting)}] if greeting else []
        if tab.session_id is not None:
            for t in self.sessions.turns(tab.session_id):
                msgs += [{"role": "user", "content": bubble(t.user_role, t.text)},
                         {"role": "assistant", "content": bubble(name, t.reply)}]
            limit = self.cut.get(tab.session_id)
            if limit and len(msgs) > self.greeting_offset(tab):
                msgs[-1]["content"] += f" …\n\n<em>(cut at the maximum reply length, {limit} tokens: press Continue " \
                                       "to go on)</em>"
        return msgs

    def greeting_offset(self, tab: Tab) -> int:
        """How many bubbles come before the first turn (1 with a greeting)."""
        return 1 if tab.character and self.shelf.greeting(tab.character) else 0

    def seen(self, tab: Tab) -> Tab:
        """The tab, marked as showing the session as it is stored now."""
        if tab.session_id is None:
            return tab
        return replace(tab, seen=self.sessions.get(tab.session_id).updated)

    def swipe_label(self, tab: Tab) -> str:
        """``n/m`` over the last reply's alternatives ("" before the first reply)."""
        if tab.session_id is None or not self.sessions.turns(tab.session_id):
            return ""
        alts = self.sessions.alternatives(tab.session_id, -1)
        return f"{self.sessions.chosen(tab.session_id, -1) + 1}/{len(alts)}"

    def last_trace_view(self, tab: Tab) -> View:
        """The "why this reply" panel for the chat's last reply as stored now."""
        turns = self.sessions.turns(tab.session_id) if tab.session_id is not None else []
        trace = self.sessions.trace(tab.session_id, -1) if turns else None
        return trace_view(trace, self.shelf.character(tab.character) if trace else None)

    def fresh(self, tab: Tab) -> None:
        """Refuse to change a chat this tab shows out of date; the refusal carries the reloaded chat."""
        if self.sessions.get(tab.session_id).updated != tab.seen:
            tab = self.seen(tab)
            raise Stale({"tab": tab, "chat": self.messages(tab), "swipes": self.swipe_label(tab)})
