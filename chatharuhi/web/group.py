"""The web app's group chat panel (chat/group.py), apart from the one-to-one chat.

"Group chat": pick several characters, the turn order and the most replies a message gets; each reply is a
bubble with its speaker's avatar and name; "Let … speak" has one go on (muted or not), "Muted" keeps some
quiet unless asked; the group's own "Memory" (pinned facts, shown as memory.py shows the one-to-one chat's).
``GroupPanel`` holds the handlers as plain Python (values in, a dict of named view fields out);
``group_section`` lays them out, one call from layout.py. Group chats are this browser's like its other chats
(the owners table), and resumed from the panel's own list.
"""

from __future__ import annotations

import html
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..chat.rounds import is_group_key
from ..config import DEFAULT_GROUP_REPLIES, GROUP_ORDERS
from ..errors import ChatHaruhiError, InputError
from ..sessions.owners import owner_key, valid_token
from .events import panel_event
from .memory import fact_number, memory_view
from .render import bubble, literal
from .state import BOT_CACHE_SIZE, title_of

if TYPE_CHECKING:
    from ..chat.group import GroupChat
    from ..sessions import SessionStore
    from ..sessions.owners import Owners
    from .app import WebDemo
    from .characters import Shelf

View = dict[str, Any]
AVATAR_PX = 28


@dataclass(frozen=True)
class GroupTab:
    """What one browser tab's group panel is doing: who is in the group, how they take turns, its session."""

    characters: tuple[str, ...] = ()
    session_id: Any = None  # None until the first round is stored
    user_role: str = ""
    order: str = "natural"
    max_replies: int = DEFAULT_GROUP_REPLIES
    muted: tuple[str, ...] = ()
    owner: str = ""


class GroupPanel:
    """The group chat's handlers and its groups (cached), over the store, the owners table and the shelf;
    ``backend``: returns the backend that answers now ("Get a better model" switches it)."""

    def __init__(self, sessions: "SessionStore", owners: "Owners", shelf: "Shelf", backend: Callable[[], Any],
                 embedder: Any):
        self.sessions, self.owners, self.shelf, self.backend, self.embedder = sessions, owners, shelf, backend, embedder
        self._groups: OrderedDict[Any, GroupChat] = OrderedDict()
        self._lock = threading.Lock()

    # -- the group ---------------------------------------------------------------------------------------
    def group(self, gtab: GroupTab) -> "GroupChat":
        """The tab's group: its stored session's (cached, read again), or a new one not stored yet."""
        from ..chat.group import GroupChat

        backend = self.backend()
        key = gtab.session_id if gtab.session_id is not None else ("new", gtab.characters, gtab.owner)
        with self._lock:
            group = self._groups.get(key)
            if group is not None and group.backend is not backend:  # "Get a better model" switched it
                del self._groups[key]
                group = None
            if group is not None:
                self._groups.move_to_end(key)
        if group is None:
            if gtab.session_id is not None:
                group = GroupChat(session=gtab.session_id, sessions=self.sessions, llm=backend,
                                  embedder=self.embedder)
            else:
                group = GroupChat([self.shelf.character(n) for n in gtab.characters], llm=backend,
                                  embedder=self.embedder, sessions=self.sessions, user_role=gtab.user_role or None)
            with self._lock:
                group = self._groups.setdefault(key, group)
                while len(self._groups) > BOT_CACHE_SIZE:
                    self._groups.popitem(last=False)
        elif gtab.session_id is not None:
            group.dialogue.reload()  # another tab may have added a round
        group.set_order(gtab.order)
        group.order.max_replies = gtab.max_replies
        for name in group.characters:
            (group.mute if name in gtab.muted else group.unmute)(name)
        return group

    def start(self, names: list[str] | None, user_role: str, order: str, max_replies: Any, gtab: GroupTab | None,
              token: Any) -> View:
        """A new group chat with the characters picked (1 to 10; one is a one-to-one chat)."""
        names = [n for n in (names or []) if n]
        if not names:
            raise InputError("pick the characters of the group first")
        owner = owner_key(token) if valid_token(token) else ""
        for name in names:
            self.shelf.check_visible(name, owner)
        if order not in GROUP_ORDERS:
            raise InputError(f"unknown turn order {order!r}: use one of {', '.join(GROUP_ORDERS)}")
        new = GroupTab(tuple(names), None, (user_role or "").strip(), order, _replies(max_replies), (), owner)
        group = self.group(new)  # checks the group now (a name twice, too many) rather than at the first message
        new = replace(new, user_role=group.user_role)
        return {"g_tab": new, "g_chat": [], "g_status": f"a new group: {literal(self._names(group))}",
                "g_user_role": group.user_role, **self._controls(group, new), **memory_view(group.memory)}

    def open(self, session_id: Any, token: Any) -> View:
        """Open one of this browser's group chats where it left off."""
        if not session_id:
            return {}
        self.owners.check(session_id, token)
        session = self.sessions.get(session_id)
        if not is_group_key(session.character):
            raise InputError("that chat is a one-to-one chat: open it under Your chats")
        gtab = GroupTab(session_id=session_id, user_role=session.user_role, owner=owner_key(token))
        group = self.group(gtab)
        gtab = replace(gtab, characters=tuple(group.characters))
        return {"g_tab": gtab, "g_chat": self.bubbles(group), "g_user_role": group.user_role,
                "g_status": f"resumed: {literal(session.title or '(untitled)')}",
                **self._controls(group, gtab), **memory_view(group.memory)}

    def chats(self, token: Any) -> list[tuple[str, Any]]:
        """This browser's group chats, newest first, as (label, id)."""
        found = []
        for sid in self.owners.sessions(token):
            try:
                session = self.sessions.get(sid)
            except (ChatHaruhiError, LookupError):
                continue
            if is_group_key(session.character):
                found.append(session)
        found.sort(key=lambda s: s.updated, reverse=True)
        return [(f"{s.character} · {s.title or '(untitled)'}", s.id) for s in found]

    def _names(self, group: "GroupChat") -> str:
        return "、".join(b.character.display_name for b in group.bots.values())

    def _controls(self, group: "GroupChat", gtab: GroupTab) -> View:
        members = [(b.character.display_name, name) for name, b in group.bots.items()]
        return {"g_speak": {"choices": members, "value": None}, "g_mute": {"choices": members,
                                                                           "value": list(gtab.muted)},
                "g_order": gtab.order, "g_max_replies": gtab.max_replies}

    # -- bubbles -----------------------------------------------------------------------------------------
    def bubble(self, speaker: str, text: str) -> str:
        """A member's bubble: its avatar (our own small picture, the only markup it holds), name and words."""
        shelf = self.shelf
        try:
            avatar, _ = shelf.avatar(speaker)
            name = shelf.display_name(speaker)
        except ChatHaruhiError:  # a member that has left the folder since
            avatar, name = None, speaker
        image = (f'<img src="/gradio_api/file={html.escape(str(avatar), quote=True)}" width="{AVATAR_PX}" '
                 f'height="{AVATAR_PX}" alt="" style="border-radius:50%;vertical-align:middle;margin-right:6px">'
                 if avatar else "")
        return image + bubble(name, text)

    def bubbles(self, group: "GroupChat") -> list[dict]:
        """The group's rounds as the page shows them: the user's bubble, then one per reply."""
        out = []
        for rnd in group.history:
            if rnd.text:
                out.append({"role": "user", "content": bubble(rnd.user_role, rnd.text)})
            out += [{"role": "assistant", "content": self.bubble(s.speaker, s.text)} for s in rnd.replies]
        return out

    # -- a round -----------------------------------------------------------------------------------------
    def send(self, text: str, gtab: GroupTab | None, token: Any) -> Iterator[View]:
        """Send a message: each speaker's reply streams into its own bubble; the round is stored at its end."""
        text = (text or "").strip()
        if not text:
            raise InputError("empty message: type something first")
        yield from self._round(text, None, gtab, token)

    def speak(self, name: str | None, gtab: GroupTab | None, token: Any) -> Iterator[View]:
        """Let one member speak now, unprompted (muted or not)."""
        if not name:
            raise InputError("pick who speaks first")
        yield from self._round(None, [name], gtab, token)

    def _round(self, text: str | None, speakers: list[str] | None, gtab: GroupTab | None,
               token: Any) -> Iterator[View]:
        if gtab is None or not gtab.characters:
            raise InputError("start a group first: pick its characters and press Start")
        if not valid_token(token):
            raise InputError("this page has no browser token yet: reload the page")
        if gtab.session_id is not None:
            self.owners.check(gtab.session_id, token)
        group = self.group(gtab)
        shown = self.bubbles(group) + ([{"role": "user", "content": bubble(group.user_role, text)}] if text else [])
        yield {"g_message": "", "g_chat": shown, "g_status": "…"}
        rounds = group.stream(text, speakers=speakers)
        try:
            for speaking in rounds:
                said = ""
                yield {"g_chat": shown + [{"role": "assistant", "content": self.bubble(speaking.speaker, "")}],
                       "g_status": f"{literal(speaking.display_name)} is replying…"}
                for chunk in speaking:
                    said += chunk
                    yield {"g_chat": shown + [{"role": "assistant", "content": self.bubble(speaking.speaker, said)}]}
                shown = shown + [{"role": "assistant", "content": self.bubble(speaking.speaker, said)}]
        finally:
            rounds.close()
        yield self._after_round(group, gtab, token, text)

    def _after_round(self, group: "GroupChat", gtab: GroupTab, token: Any, text: str | None) -> View:
        session = group.session
        if session is not None and gtab.session_id is None:  # the first round: the chat is this browser's now
            self.owners.claim(session.id, token)
            self.sessions.rename(session.id, title_of(text or group.history[0].replies[0].text))
            with self._lock:  # cached from now on under its session
                self._groups.pop(("new", gtab.characters, gtab.owner), None)
                self._groups[session.id] = group
            gtab = replace(gtab, session_id=session.id)
        return {"g_tab": gtab, "g_chat": self.bubbles(group), "g_status": "",
                "g_chats": {"choices": self.chats(token), "value": gtab.session_id},
                **memory_view(group.memory)}

    # -- settings ------------------------------------------------------------------------------------------
    def settings(self, order: str, max_replies: Any, muted: list[str] | None, gtab: GroupTab | None) -> View:
        """The turn order, the most replies a message gets, and who is muted."""
        if gtab is None or not gtab.characters:
            raise InputError("start a group first")
        if order not in GROUP_ORDERS:
            raise InputError(f"unknown turn order {order!r}: use one of {', '.join(GROUP_ORDERS)}")
        new = replace(gtab, order=order, max_replies=_replies(max_replies), muted=tuple(muted or ()))
        self.group(new)
        quiet = ", ".join(new.muted) or "nobody"
        return {"g_tab": new, "g_status": f"turn order {order}, at most {new.max_replies} replies; muted: {quiet}"}

    # -- the group's memory ------------------------------------------------------------------------------------
    def remember(self, text: str, who: str | None, gtab: GroupTab | None, token: Any) -> View:
        """Pin a fact to the group (for everyone, or one member)."""
        group = self._owned(gtab, token)
        group.memory.pin(text, character=who or None)
        return self._after_memory(group, gtab, token)

    def change(self, fact_id: Any, text: str, gtab: GroupTab | None, token: Any) -> View:
        """Change pinned fact ``fact_id`` (its number in the list)."""
        group = self._owned(gtab, token)
        group.memory.edit(fact_number(fact_id), text)
        return self._after_memory(group, gtab, token)

    def forget(self, fact_id: Any, gtab: GroupTab | None, token: Any) -> View:
        """Unpin fact ``fact_id``."""
        group = self._owned(gtab, token)
        group.memory.forget(fact_number(fact_id))
        return self._after_memory(group, gtab, token)

    def _owned(self, gtab: GroupTab | None, token: Any) -> "GroupChat":
        if gtab is None or not gtab.characters:
            raise InputError("start a group first")
        if gtab.session_id is not None:
            self.owners.check(gtab.session_id, token)
        group = self.group(gtab)
        if group.memory is None:
            raise InputError("memory is off for this chat")
        return group

    def _after_memory(self, group: "GroupChat", gtab: GroupTab, token: Any) -> View:
        view = memory_view(group.memory)
        if group.session is not None and gtab.session_id is None:  # pinning started the stored chat
            self.owners.claim(group.session.id, token)
            with self._lock:
                self._groups.pop(("new", gtab.characters, gtab.owner), None)
                self._groups[group.session.id] = group
            view.update(g_tab=replace(gtab, session_id=group.session.id),
                        g_chats={"choices": self.chats(token), "value": group.session.id})
        return view


def _replies(value: Any) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise InputError(f"most replies a message gets: a whole number from 1, not {value!r}") from None
    if n < 1:
        raise InputError("most replies a message gets: 1 at least")
    return n


# -- layout ---------------------------------------------------------------------------------------------------
def group_section(gr: Any, demo: "WebDemo", c: dict, app: Any) -> None:
    """The "Group chat" panel and its events (called inside the Blocks, after the one-to-one chat)."""
    g: dict[str, Any] = {}
    with gr.Accordion("Group chat: several characters at once", open=False, elem_id="group-chat"):
        g["g_tab"] = gr.State(GroupTab())
        with gr.Row():
            _group_controls(gr, demo, g)
            _group_chat(gr, g)
    _wire_group(gr, app, demo.group, g, c["browser"])


def _group_controls(gr: Any, demo: "WebDemo", g: dict) -> None:
    """The left column: who is in the group, how they take turns, the group's chats, muting, its memory."""
    with gr.Column(scale=1, min_width=280):
        g["g_characters"] = gr.Dropdown(demo.choices(), multiselect=True, label="Characters",
                                        value=None, elem_id="group-characters")
        g["g_user_role"] = gr.Textbox(label="Your name in the story", max_lines=1, elem_id="group-user-role")
        g["g_order"] = gr.Radio(list(GROUP_ORDERS), value="natural", label="Turn order",
                                info="natural: whom you address first, then talkativeness; list: everyone "
                                     "in turn; manual: only whom you address or let speak",
                                elem_id="group-order")
        g["g_max_replies"] = gr.Number(DEFAULT_GROUP_REPLIES, precision=0, minimum=1,
                                       label="Most replies a message gets", elem_id="group-max-replies")
        g["g_start"] = gr.Button("Start the group", variant="primary", elem_id="group-start")
        g["g_chats"] = gr.Dropdown([], label="Your group chats (pick one to resume)", value=None,
                                   elem_id="group-chats")
        g["g_mute"] = gr.Dropdown([], multiselect=True, label="Muted (speak only when let)", value=None,
                                  elem_id="group-mute")
        g["g_apply"] = gr.Button("Apply order and muting", size="sm", elem_id="group-apply")
        with gr.Accordion("Memory", open=False, elem_id="group-memory-panel"):
            g["g_memory"] = gr.Markdown(elem_id="group-memory")
            g["g_fact_text"] = gr.Textbox(label="A fact to pin (or the new text of fact N)", max_lines=2,
                                          elem_id="group-fact-text")
            g["g_fact_who"] = gr.Textbox(label="Only for (a member's name; empty: everyone)", max_lines=1,
                                         elem_id="group-fact-who")
            g["g_fact_id"] = gr.Number(label="Fact N", precision=0, elem_id="group-fact-id")
            with gr.Row():
                g["g_pin"] = gr.Button("Pin", size="sm", elem_id="group-pin")
                g["g_change"] = gr.Button("Change N", size="sm", elem_id="group-change")
                g["g_forget"] = gr.Button("Unpin N", size="sm", variant="stop", elem_id="group-forget")


def _group_chat(gr: Any, g: dict) -> None:
    """The right column: the group's bubbles, the message box, and "Let … speak"."""
    with gr.Column(scale=3):
        g["g_chat"] = gr.Chatbot(label="Group", height=460, elem_id="group-chat-log", feedback_options=None,
                                 group_consecutive_messages=False, buttons=["copy"])
        g["g_status"] = gr.Markdown(elem_id="group-status")
        with gr.Row():
            g["g_message"] = gr.Textbox(show_label=False, placeholder="Say something to the group… "
                                        "(Enter sends)", scale=6, max_lines=4, elem_id="group-message")
            g["g_send"] = gr.Button("Send", variant="primary", scale=1, min_width=80, elem_id="group-send")
        with gr.Row():
            g["g_speak"] = gr.Dropdown([], label="Let … speak", value=None, scale=3, elem_id="group-speak")
            g["g_speak_go"] = gr.Button("Let them speak", scale=1, elem_id="group-speak-go")


def _wire_group(gr: Any, app: Any, panel: GroupPanel, g: dict, browser: Any) -> None:
    """The group panel's events; its chats are listed when the page opens."""
    outputs = {k: v for k, v in g.items() if not k.endswith(("_start", "_apply", "_pin", "_change", "_forget",
                                                                "_send", "_go"))}
    targets = list(outputs.values())
    quiet = {"outputs": targets, "show_progress": "hidden"}
    tab = g["g_tab"]
    g["g_start"].click(panel_event(gr, panel.start, outputs),
                       inputs=[g["g_characters"], g["g_user_role"], g["g_order"], g["g_max_replies"], tab, browser],
                       api_name="group_start", **quiet)
    g["g_chats"].input(panel_event(gr, panel.open, outputs), inputs=[g["g_chats"], browser], api_name="group_open",
                       **quiet)
    for event in (g["g_send"].click, g["g_message"].submit):
        event(panel_event(gr, panel.send, outputs, streaming=True), inputs=[g["g_message"], tab, browser],
              api_name="group_send" if event == g["g_send"].click else False, concurrency_id="reply", **quiet)
    g["g_speak_go"].click(panel_event(gr, panel.speak, outputs, streaming=True), inputs=[g["g_speak"], tab, browser],
                          api_name="group_speak", concurrency_id="reply", **quiet)
    g["g_apply"].click(panel_event(gr, panel.settings, outputs),
                       inputs=[g["g_order"], g["g_max_replies"], g["g_mute"], tab], api_name="group_settings", **quiet)
    g["g_pin"].click(panel_event(gr, panel.remember, outputs), inputs=[g["g_fact_text"], g["g_fact_who"], tab, browser],
                     api_name="group_pin", **quiet)
    g["g_change"].click(panel_event(gr, panel.change, outputs), inputs=[g["g_fact_id"], g["g_fact_text"], tab, browser],
                        api_name="group_change_fact", **quiet)
    g["g_forget"].click(panel_event(gr, panel.forget, outputs), inputs=[g["g_fact_id"], tab, browser],
                        api_name="group_forget_fact", **quiet)
    app.load(lambda token: gr.update(choices=panel.chats(token)), inputs=[browser], outputs=[g["g_chats"]],
             api_name=False, show_progress="hidden")
