"""The web app's memory panel for the one-to-one chat (chat/memory.py): the pinned facts, numbered, to add, change
and remove (the first fact starts the stored chat, as a first message does), and how many earlier turns can come
back; ``memory_view`` is the panel's text, for the group chat's panel too (group.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

from ..errors import InputError
from ..sessions.owners import valid_token
from .events import panel_event
from .render import literal
from .state import View, title_of

if TYPE_CHECKING:
    from ..chat.chatbot import Chatbot
    from ..sessions import SessionStore
    from ..sessions.owners import Owners
    from .app import WebDemo
    from .characters import Shelf


def memory_view(memory: Any, prefix: str = "g_") -> View:
    """The memory panel's text: the pinned facts, numbered, the summary, how many earlier turns can come back."""
    if memory is None:
        return {f"{prefix}memory": "*(memory is off for this chat)*"}
    facts = memory.facts
    lines = [f"**{f.id}** · {literal(f.text)}" + (f" *(only {literal(f.character)})*" if f.character else "")
             for f in facts] or ["*(no pinned facts yet)*"]  # "1. x" would be a list whose numbers are styling
    lines = ["  \n".join(lines)]
    summary = memory.summary
    tail = [f"**Summary:** {literal(summary)}"] if summary else []
    count = f"*{len(memory.entries)} earlier turns can come back when they match what is said.*"
    return {f"{prefix}memory": "\n\n".join(["\n".join(lines), *tail, count]), f"{prefix}fact_text": ""}


class ChatMemoryPanel:
    """The one-to-one chat's memory handlers: the tab's stored chat, its chatbot's memory.

    ``bot``: the demo's chatbot of a stored chat; ``session_choices``: this browser's chat list (a first fact starts
    a chat, which joins it)."""

    def __init__(self, sessions: "SessionStore", owners: "Owners", shelf: "Shelf", bot: Callable[[Any], "Chatbot"],
                 session_choices: Callable[[Any], list]):
        self.sessions, self.owners, self.shelf = sessions, owners, shelf
        self.bot, self.session_choices = bot, session_choices

    def chat_memory(self, tab: Any, token: Any) -> View:
        """The memory panel of the one-to-one chat the tab shows."""
        if tab is None or tab.session_id is None:
            return {"memory": "*(no pinned facts yet: they go into every prompt of this chat)*", "fact_text": ""}
        self.owners.check(tab.session_id, token)
        return memory_view(self.bot(tab.session_id).memory, prefix="")

    def chat_remember(self, text: str, tab: Any, token: Any) -> View:
        """Pin a fact to the one-to-one chat (starting its stored chat if no message was sent yet)."""
        view: View = {}
        if tab is None or not tab.character:
            raise InputError("pick a character first")
        if not (text or "").strip():
            raise InputError("empty fact: type what the character should remember")
        if tab.session_id is None:
            if not valid_token(token):
                raise InputError("this page has no browser token yet: reload the page")
            role = tab.user_role or self.shelf.default_role(tab.character)
            session = self.sessions.create(self.shelf.character(tab.character).name, role, title=title_of(text))
            self.owners.claim(session.id, token)
            tab = replace(tab, session_id=session.id, user_role=role)
            view.update(tab=tab, sessions=(self.session_choices(token), session.id))
        return {**view, **self._chat_memory_op(tab, token, lambda m: m.pin(text))}

    def chat_change(self, fact_id: Any, text: str, tab: Any, token: Any) -> View:
        """Change one of the one-to-one chat's pinned facts."""
        return self._chat_memory_op(tab, token, lambda m: m.edit(fact_number(fact_id), text))

    def chat_forget(self, fact_id: Any, tab: Any, token: Any) -> View:
        """Unpin one of the one-to-one chat's facts."""
        return self._chat_memory_op(tab, token, lambda m: m.forget(fact_number(fact_id)))

    def _chat_memory_op(self, tab: Any, token: Any, op: Any) -> View:
        if tab is None or tab.session_id is None:
            raise InputError("no chat yet: send a message or pin a fact first")
        self.owners.check(tab.session_id, token)
        bot = self.bot(tab.session_id)
        if bot.memory is None:
            raise InputError("memory is off for this chat")
        op(bot.memory)
        return memory_view(bot.memory, prefix="")


def fact_number(value: Any) -> str:
    """A pinned fact's number as typed, checked."""
    if value is None or str(value).strip() == "":
        raise InputError("give the fact's number (the memory list shows them)")
    try:
        return str(int(float(value)))
    except (TypeError, ValueError):
        raise InputError(f"{value!r} is not a fact's number") from None


# -- layout ---------------------------------------------------------------------------------------------------
def memory_section(gr: Any, demo: "WebDemo", c: dict) -> None:
    """The one-to-one chat's "Memory" panel (pinned facts) and its events (called in the left column)."""
    panel = demo.memory
    m: dict[str, Any] = {}
    with gr.Accordion("Memory: facts the character always keeps in mind", open=False,
                      elem_id="memory-panel") as accordion:
        m["memory"] = gr.Markdown(elem_id="memory")
        m["refresh"] = gr.Button("Show this chat's memory", size="sm", elem_id="memory-refresh")
        m["fact_text"] = gr.Textbox(label="A fact to pin (or the new text of fact N)", max_lines=2, elem_id="fact-text")
        m["fact_id"] = gr.Number(label="Fact N", precision=0, elem_id="fact-id")
        with gr.Row():
            m["pin"] = gr.Button("Pin", size="sm", elem_id="pin-fact")
            m["change"] = gr.Button("Change N", size="sm", elem_id="change-fact")
            m["forget"] = gr.Button("Unpin N", size="sm", variant="stop", elem_id="forget-fact")
    outputs = {"memory": m["memory"], "fact_text": m["fact_text"], "tab": c["tab"], "sessions": c["sessions"],
               "g_status": m["memory"]}
    targets = [m["memory"], m["fact_text"], c["tab"], c["sessions"]]

    def with_sessions(fn: Any) -> Any:
        def run(*args):
            view = fn(*args)
            if "sessions" in view:
                choices, value = view["sessions"]
                view["sessions"] = {"choices": choices, "value": value}
            return view
        run.__name__, run.__doc__ = fn.__name__, fn.__doc__
        return run

    quiet = {"outputs": targets, "show_progress": "hidden"}
    tab, browser = c["tab"], c["browser"]
    m["pin"].click(panel_event(gr, with_sessions(panel.chat_remember), outputs), inputs=[m["fact_text"], tab, browser],
                   api_name="pin_fact", **quiet)
    m["change"].click(panel_event(gr, panel.chat_change, outputs), inputs=[m["fact_id"], m["fact_text"], tab, browser],
                      api_name="change_fact", **quiet)
    m["forget"].click(panel_event(gr, panel.chat_forget, outputs), inputs=[m["fact_id"], tab, browser],
                      api_name="forget_fact", **quiet)
    refresh = panel_event(gr, panel.chat_memory, outputs)
    m["refresh"].click(refresh, inputs=[tab, browser], api_name="chat_memory", **quiet)
    accordion.expand(refresh, inputs=[tab, browser], api_name=False, **quiet)
