"""The demo's handlers that change a chat after the fact: Stop (and keep the partial reply), swipes over
alternative replies, and editing or deleting any message.

Edits follow SillyTavern: an edited message changes in place and the messages after it stay as they
were (regenerate the reply to have the new text answered); deleting a message deletes its exchange
(the user's line and the reply to it) and the later ones move up. Nothing is overwritten in the
store. A tab whose view is older than the stored chat (another tab changed it) is refused with the
chat reloaded, and the text it was about to save left in its box.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from ..chat.history import History
from ..errors import InputError
from ..types import Turn
from .render import bubble, literal, unbubble
from .state import Live, Tab, View
from .trace import trace_view

if TYPE_CHECKING:
    from .app import WebDemo


class Stale(InputError):
    """The chat changed in another tab since this one showed it."""

    def __init__(self, view: View):
        self.view = view
        super().__init__("this chat was changed in another tab, so it has been reloaded here; nothing was "
                         "changed — your text is still in the box: apply it again if you still want it")


class EditHandlers:
    """Stop, keep-partial, swipes, edit and delete (mixed into ``WebDemo``)."""

    # -- stop ------------------------------------------------------------------------------------
    def stop(self: "WebDemo", tab: Tab | None) -> View:
        """The reply was stopped: show what had streamed and offer to keep it (nothing is stored yet)."""
        if tab is None or tab.session_id is None:
            return {"status": "stopped", "partial": False}
        live = self._live.get(tab.session_id)
        if live is None or live.done:
            return {"status": "the reply had already finished", "partial": False}
        name = self.shelf.display_name(tab.character)
        if not live.reply.strip():
            self._live.pop(tab.session_id, None)
            view = {"chat": self.messages(tab), "status": "stopped before any reply came; nothing was kept",
                    "partial": False}
            return {**view, "message": live.text} if live.kind == "send" else view  # the typed text is not lost
        chat = self.messages(tab)
        if live.kind == "send":
            chat += [{"role": "user", "content": bubble(live.role, live.text)}]
        else:
            chat = chat[:-1]
        chat += [{"role": "assistant", "content": bubble(name, live.reply + " …")}]
        return {"chat": chat, "partial": True,
                "status": "Stopped. The partial reply is not kept unless you press **Keep partial reply**."}

    def keep_partial(self: "WebDemo", tab: Tab | None, token: Any = None) -> View:
        """Keep the stopped reply as it was: a new turn, or a new swipe of the last one."""
        live = self._live.pop(tab.session_id, None) if tab and tab.session_id is not None else None
        if live is None or live.done or not live.reply.strip():
            return {"status": "there is no stopped reply to keep", "partial": False}
        self.owners.check(tab.session_id, token, terminal=self.terminal_chats)
        stored = History(store=self.sessions, session_id=tab.session_id)
        if live.kind == "send":
            stored.commit(Turn(live.role, live.text, live.reply.strip()), live.trace)
        elif live.kind == "continue":
            last = len(self.sessions.turns(tab.session_id)) - 1
            self.sessions.edit_turn(tab.session_id, last, reply=live.reply.strip())
        else:
            stored.commit_alternative(live.reply.strip(), live.trace)
        tab = self.seen(tab)
        return {"tab": tab, "chat": self.messages(tab), "partial": False, "status": "kept the partial reply",
                "swipes": self.swipe_label(tab), **trace_view(live.trace, self.character(tab.character))}

    # -- swipes ----------------------------------------------------------------------------------
    def swipe_label(self: "WebDemo", tab: Tab) -> str:
        """``n/m`` over the last reply's alternatives ("" before the first reply)."""
        if tab.session_id is None or not self.sessions.turns(tab.session_id):
            return ""
        alts = self.sessions.alternatives(tab.session_id, -1)
        return f"{self.sessions.chosen(tab.session_id, -1) + 1}/{len(alts)}"

    def swipe(self: "WebDemo", step: int, tab: Tab | None, token: Any = None) -> Iterator[View]:
        """Show the previous (-1) or next (+1) alternative of the last reply; past the newest, regenerate."""
        if tab is None or tab.session_id is None or not self.sessions.turns(tab.session_id):
            raise InputError("no reply to swipe yet: send a message first")
        self.owners.check(tab.session_id, token, terminal=self.terminal_chats)
        self._fresh(tab)
        alts = self.sessions.alternatives(tab.session_id, -1)
        n = self.sessions.chosen(tab.session_id, -1) + step
        if n >= len(alts):
            yield from self.regenerate(tab, token)
            return
        if n < 0:
            yield {"status": "this is the first reply"}
            return
        self.sessions.select_alternative(tab.session_id, -1, n)
        tab = self.seen(tab)
        yield {"tab": tab, "chat": self.messages(tab), "swipes": self.swipe_label(tab), "status": "",
               **self.last_trace_view(tab)}

    def last_trace_view(self: "WebDemo", tab: Tab) -> View:
        """The "why this reply" panel for the chat's last reply as stored now."""
        turns = self.sessions.turns(tab.session_id) if tab.session_id is not None else []
        trace = self.sessions.trace(tab.session_id, -1) if turns else None
        return trace_view(trace, self.character(tab.character) if trace else None)

    # -- continue ------------------------------------------------------------------------------
    def continue_reply(self: "WebDemo", tab: Tab | None, token: Any = None) -> Iterator[View]:
        """Extend the last reply where it stopped (a reply cut by the length limit, say): the model goes on from
        its own text (a local model's prefill); the longer reply replaces the stored one."""
        if tab is None or tab.session_id is None or not self.sessions.turns(tab.session_id):
            raise InputError("nothing to continue yet: send a message first")
        self.owners.check(tab.session_id, token, terminal=self.terminal_chats)
        self._fresh(tab)
        if not self.backend.supports_prefill:
            raise InputError(f"the {self.backend.name} backend cannot go on from a reply's own text: press "
                             "Regenerate for a new reply, or raise the maximum reply length in Settings")
        bot = self.bot(tab.session_id)
        last = bot.history[-1]
        self._cut.pop(tab.session_id, None)
        shown = self.messages(tab)[:-1]
        name = self.shelf.display_name(tab.character)
        live = self._live[tab.session_id] = Live("continue", last.text, last.user_role, {})
        yield {"chat": shown + [{"role": "assistant", "content": bubble(name, last.reply)}],
               "status": f"{literal(name)} goes on…", "partial": False}
        reply = bot.continue_reply(**self._sampling(tab))
        yield from self._stream(reply, live, shown, tab)
        yield self._after_reply(bot, tab, token, reply)

    # -- edit and delete -------------------------------------------------------------------------
    def select_message(self: "WebDemo", index: Any, tab: Tab | None) -> View:
        """A bubble was clicked: put its stored text in the edit box (numbered as the status line counts)."""
        turn, side = self._locate(index, tab)
        t = self.sessions.turns(tab.session_id)[turn]
        who = "your line" if side == "user" else "the reply"
        return {"edit_index": int(index), "edit_text": t.text if side == "user" else t.reply,
                "edit_box": True, "edit_label": f"Message {int(index) + 1} ({who}): change it and save, or delete "
                                                f"exchange {turn + 1}",
                "status": f"editing message {int(index) + 1}"}

    def edit_in_place(self: "WebDemo", index: Any, value: str, tab: Tab | None, token: Any = None) -> View:
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
            return {"chat": self.messages(tab) if tab else [], "warning": str(exc)}

    def edit_message(self: "WebDemo", index: Any, text: str, tab: Tab | None, token: Any = None) -> View:
        """Replace the text of message ``index`` (a bubble's position); the messages after it stay."""
        turn, side = self._locate(index, tab)
        if not (text or "").strip():
            raise InputError("the edited message is empty: type the new text, or use Delete to remove it")
        self.owners.check(tab.session_id, token, terminal=self.terminal_chats)
        self._fresh(tab)
        if side == "user":
            self.sessions.edit_turn(tab.session_id, turn, text=text)
        else:
            self.sessions.edit_turn(tab.session_id, turn, reply=text)
        tab = self.seen(tab)
        last = turn == len(self.sessions.turns(tab.session_id)) - 1
        hint = " — press Regenerate to have it answered anew" if side == "user" and last else ""
        return {"tab": tab, "chat": self.messages(tab), "edit_box": False, "edit_text": "",
                "swipes": self.swipe_label(tab), "status": f"message {int(index) + 1} edited{hint}",
                **self.last_trace_view(tab)}

    def delete_message(self: "WebDemo", index: Any, tab: Tab | None, token: Any = None) -> View:
        """Delete message ``index`` with its exchange (the user's line and its reply); later ones move up."""
        turn, _ = self._locate(index, tab)
        self.owners.check(tab.session_id, token, terminal=self.terminal_chats)
        self._fresh(tab)
        self.sessions.delete_turn(tab.session_id, turn)
        tab = self.seen(tab)
        return {"tab": tab, "chat": self.messages(tab), "edit_box": False, "edit_text": "",
                "swipes": self.swipe_label(tab), "status": f"deleted exchange {turn + 1} (your line and its reply)",
                **self.last_trace_view(tab)}

    def _locate(self: "WebDemo", index: Any, tab: Tab | None) -> tuple[int, str]:
        """Bubble position -> (turn index, "user" or "reply")."""
        if tab is None or tab.session_id is None:
            raise InputError("nothing to edit yet: send a message first")
        try:
            i = int(index)
        except (TypeError, ValueError):
            raise InputError(f"message number {index!r} is not a number") from None
        offset = self.greeting_offset(tab)
        turns = len(self.sessions.turns(tab.session_id))
        if i < offset:
            raise InputError("the greeting is part of the character, not of this chat: it cannot be edited")
        if not 0 <= i - offset < 2 * turns:
            raise InputError(f"there is no message {i + 1} in this chat (it has {offset + 2 * turns})")
        return (i - offset) // 2, "user" if (i - offset) % 2 == 0 else "reply"

    def _fresh(self: "WebDemo", tab: Tab) -> None:
        """Refuse to change a chat this tab shows out of date; the refusal carries the reloaded chat."""
        if self.sessions.get(tab.session_id).updated != tab.seen:
            tab = self.seen(tab)
            raise Stale({"tab": tab, "chat": self.messages(tab), "swipes": self.swipe_label(tab)})
