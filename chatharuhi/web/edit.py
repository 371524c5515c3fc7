"""The demo's handlers that change a chat after the fact: Stop (and keep the partial reply), swipes over
alternative replies, and editing or deleting any message.

Edits follow SillyTavern: an edited message changes in place and the messages after it stay as they
were (regenerate the reply to have the new text answered); deleting a message deletes its exchange
(the user's line and the reply to it) and the later ones move up. Nothing is overwritten in the
store. A tab whose view is older than the stored chat (another tab changed it) is refused with the
chat reloaded, and the text it was about to save left in its box.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..chat.history import History
from ..errors import InputError
from ..types import Turn
from .render import bubble, unbubble
from .state import Live, Tab, View
from .trace import trace_view
from .transcript import Stale

if TYPE_CHECKING:
    from ..sessions import SessionStore
    from ..sessions.owners import Owners
    from .characters import Shelf
    from .transcript import Transcript

__all__ = ["Edits", "Stale"]


class Edits:
    """Stop, keep-partial, swipes, edit and delete, over the store, the owners table and the replies in flight.

    ``live``: session id -> the reply being streamed (or just stopped), shared with the demo that streams it;
    ``regenerate``: the demo's handler a swipe past the newest reply runs; ``terminal``: the terminal's chats
    count as this browser's (the demo on one's own machine)."""

    def __init__(self, sessions: "SessionStore", owners: "Owners", shelf: "Shelf", transcript: "Transcript",
                 live: dict[Any, Live], regenerate: Callable[[Tab, Any], Iterator[View]], terminal: bool = False):
        self.sessions, self.owners, self.shelf, self.transcript = sessions, owners, shelf, transcript
        self.live, self.regenerate, self.terminal = live, regenerate, terminal

    # -- stop ------------------------------------------------------------------------------------
    def stop(self, tab: Tab | None) -> View:
        """The reply was stopped: show what had streamed and offer to keep it (nothing is stored yet)."""
        if tab is None or tab.session_id is None:
            return {"status": "stopped", "partial": False}
        live = self.live.get(tab.session_id)
        if live is None or live.done:
            return {"status": "the reply had already finished", "partial": False}
        name = self.shelf.display_name(tab.character)
        if not live.reply.strip():
            self.live.pop(tab.session_id, None)
            view = {"chat": self.transcript.messages(tab), "status": "stopped before any reply came; nothing was kept",
                    "partial": False}
            return {**view, "message": live.text} if live.kind == "send" else view  # the typed text is not lost
        chat = self.transcript.messages(tab)
        if live.kind == "send":
            chat += [{"role": "user", "content": bubble(live.role, live.text)}]
        else:
            chat = chat[:-1]
        chat += [{"role": "assistant", "content": bubble(name, live.reply + " …")}]
        return {"chat": chat, "partial": True,
                "status": "Stopped. The partial reply is not kept unless you press **Keep partial reply**."}

    def keep_partial(self, tab: Tab | None, token: Any = None) -> View:
        """Keep the stopped reply as it was: a new turn, or a new swipe of the last one."""
        live = self.live.pop(tab.session_id, None) if tab and tab.session_id is not None else None
        if live is None or live.done or not live.reply.strip():
            return {"status": "there is no stopped reply to keep", "partial": False}
        self.owners.check(tab.session_id, token, terminal=self.terminal)
        stored = History(store=self.sessions, session_id=tab.session_id)
        if live.kind == "send":
            stored.commit(Turn(live.role, live.text, live.reply.strip()), live.trace)
        elif live.kind == "continue":
            last = len(self.sessions.turns(tab.session_id)) - 1
            self.sessions.edit_turn(tab.session_id, last, reply=live.reply.strip())
        else:
            stored.commit_alternative(live.reply.strip(), live.trace)
        tab = self.transcript.seen(tab)
        return {"tab": tab, "chat": self.transcript.messages(tab), "partial": False,
                "status": "kept the partial reply", "swipes": self.transcript.swipe_label(tab),
                **trace_view(live.trace, self.shelf.character(tab.character))}

    # -- swipes ----------------------------------------------------------------------------------
    def swipe(self, step: int, tab: Tab | None, token: Any = None) -> Iterator[View]:
        """Show the previous (-1) or next (+1) alternative of the last reply; past the newest, regenerate."""
        if tab is None or tab.session_id is None or not self.sessions.turns(tab.session_id):
            raise InputError("no reply to swipe yet: send a message first")
        self.owners.check(tab.session_id, token, terminal=self.terminal)
        self.transcript.fresh(tab)
        alts = self.sessions.alternatives(tab.session_id, -1)
        n = self.sessions.chosen(tab.session_id, -1) + step
        if n >= len(alts):
            yield from self.regenerate(tab, token)
            return
        if n < 0:
            yield {"status": "this is the first reply"}
            return
        self.sessions.select_alternative(tab.session_id, -1, n)
        tab = self.transcript.seen(tab)
        yield {"tab": tab, "chat": self.transcript.messages(tab), "swipes": self.transcript.swipe_label(tab),
               "status": "", **self.transcript.last_trace_view(tab)}

    # -- edit and delete -------------------------------------------------------------------------
    def select_message(self, index: Any, tab: Tab | None) -> View:
        """A bubble was clicked: put its stored text in the edit box (numbered as the status line counts)."""
        turn, side = self._locate(index, tab)
        t = self.sessions.turns(tab.session_id)[turn]
        who = "your line" if side == "user" else "the reply"
        return {"edit_index": int(index), "edit_text": t.text if side == "user" else t.reply,
                "edit_box": True, "edit_label": f"Message {int(index) + 1} ({who}): change it and save, or delete "
                                                f"exchange {turn + 1}",
                "status": f"editing message {int(index) + 1}"}

    def edit_in_place(self, index: Any, value: str, tab: Tab | None, token: Any = None) -> View:
        """A bubble edited in place (its pencil): store the new text; a refused edit puts the chat back."""
        text = unbubble(value, self.shelf.display_name(tab.character) if tab and tab.character else "")
        try:
            turn, side = self._locate(index, tab)
            if side == "user":  # the user's bubble carries their in-story name
                text = unbubble(value, self.sessions.turns(tab.session_id)[turn].user_role)
            return self.edit_message(index, text, tab, token)
        except InputError as exc:
            if isinstance(exc, Stale):
                raise
            return {"chat": self.transcript.messages(tab) if tab else [], "warning": str(exc)}

    def edit_message(self, index: Any, text: str, tab: Tab | None, token: Any = None) -> View:
        """Replace the text of message ``index`` (a bubble's position); the messages after it stay."""
        turn, side = self._locate(index, tab)
        if not (text or "").strip():
            raise InputError("the edited message is empty: type the new text, or use Delete to remove it")
        self.owners.check(tab.session_id, token, terminal=self.terminal)
        self.transcript.fresh(tab)
        last = turn == len(self.sessions.turns(tab.session_id)) - 1
        if side == "user":
            self.sessions.edit_turn(tab.session_id, turn, text=text)
        else:
            self.sessions.edit_turn(tab.session_id, turn, reply=text)
            if last:  # the user's own words now: no longer a reply the length limit cut
                self.transcript.cut.pop(tab.session_id, None)
        tab = self.transcript.seen(tab)
        hint = " — press Regenerate to have it answered anew" if side == "user" and last else ""
        return {"tab": tab, "chat": self.transcript.messages(tab), "edit_box": False, "edit_text": "",
                "swipes": self.transcript.swipe_label(tab), "status": f"message {int(index) + 1} edited{hint}",
                **self.transcript.last_trace_view(tab)}

    def delete_message(self, index: Any, tab: Tab | None, token: Any = None) -> View:
        """Delete message ``index`` with its exchange (the user's line and its reply); later ones move up."""
        turn, _ = self._locate(index, tab)
        self.owners.check(tab.session_id, token, terminal=self.terminal)
        self.transcript.fresh(tab)
        if turn == len(self.sessions.turns(tab.session_id)) - 1:  # the cut reply goes with it
            self.transcript.cut.pop(tab.session_id, None)
        self.sessions.delete_turn(tab.session_id, turn)
        tab = self.transcript.seen(tab)
        return {"tab": tab, "chat": self.transcript.messages(tab), "edit_box": False, "edit_text": "",
                "swipes": self.transcript.swipe_label(tab),
                "status": f"deleted exchange {turn + 1} (your line and its reply)",
                **self.transcript.last_trace_view(tab)}

    def _locate(self, index: Any, tab: Tab | None) -> tuple[int, str]:
        """Bubble position -> (turn index, "user" or "reply")."""
        if tab is None or tab.session_id is None:
            raise InputError("nothing to edit yet: send a message first")
        try:
            i = int(index)
        except (TypeError, ValueError):
            raise InputError(f"message number {index!r} is not a number") from None
        offset = self.transcript.greeting_offset(tab)
        turns = len(self.sessions.turns(tab.session_id))
        if i < offset:
            raise InputError("the greeting is part of the character, not of this chat: it cannot be edited")
        if not 0 <= i - offset < 2 * turns:
            raise InputError(f"there is no message {i + 1} in this chat (it has {offset + 2 * turns})")
        return (i - offset) // 2, "user" if (i - offset) % 2 == 0 else "reply"
