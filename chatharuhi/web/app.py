"""The Gradio web demo (``chatharuhi demo``): pick a character, chat with streaming, see why it replied.

Two layers. ``WebDemo`` holds the handlers as plain Python (values in, a dict of named view fields
out), so tests call them without a browser. It answers (pick, send, regenerate, continue, resume) and owns
the parts that handle the rest, each given what it needs: ``transcript`` (the chat as the page shows it,
transcript.py), ``edits`` (stop, swipes, edit, delete: edit.py), ``chats`` (the chat list, rename, export:
chats.py), ``settings`` (the persona and settings panels: settings.py), ``add`` (import, create: add.py),
``memory`` (the chat's pinned facts: memory.py), ``panel`` (this character: manage.py), ``better`` (a better
model: better_model.py) and ``group`` (the group chat: group.py). ``layout.py`` lays out the Gradio Blocks and
maps the fields onto components (events.py); ``demo.py`` builds and serves the app (Gradio is imported only
there, after analytics are switched off).

Isolation: each browser tab keeps its own ``Tab`` in ``gr.State`` (server-side). Each browser holds a
random token; which chats belong to which token is kept on the server (``owners.py``), and every
handler that opens or changes a chat checks it, so knowing a session id gives nobody else's chat.
The chatbots live in a small server-side cache (all of one character sharing one index).
"""

from __future__ import annotations

import logging
import random
import threading
from collections import OrderedDict
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Iterator

from ..config import RECOMMENDED_MODEL
from ..errors import InputError
from ..sessions.owners import Owners, owner_key, owners_path_for, valid_token
from .add import AddCharacter
from .better_model import BetterModel
from .characters import Shelf
from .chats import ChatList
from .edit import Edits
from .group import GroupPanel
from .manage import CharacterPanel
from .memory import ChatMemoryPanel
from .render import bubble, literal
from .settings import SettingsPanel
from .state import (
    BOT_CACHE_SIZE,
    DEFAULT_HOST,
    DEFAULT_PORT,
    REGENERATE_MIN_TEMPERATURE,
    Live,
    Settings,
    Tab,
    View,
    title_of,
)
from .trace import no_scene_reason, trace_view
from .transcript import Transcript

if TYPE_CHECKING:

    from ..chat.chatbot import Chatbot
    from ..chat.reply import Reply
    from ..sessions import SessionStore

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Tab", "WebDemo"]
logger = logging.getLogger("chatharuhi")


class WebDemo:
    """The demo's handlers without Gradio: each takes plain values and returns (or yields) a ``View``."""

    def __init__(self, backend: Any = None, characters_dir: Any = None, sessions: "SessionStore | None" = None,
                 embedder: Any = None, owners: Owners | None = None, shared_imports: bool = False, *,
                 terminal_chats: bool = False, better_model: str = RECOMMENDED_MODEL, **llm_options: Any):
        """``shared_imports``: characters visitors add are listed for everyone; ``terminal_chats``: the chats made
        with ``chatharuhi chat`` are listed too, and the user's own characters may be changed (the demo on one's own
        machine); ``better_model``: the model "Get a better model" pulls (a catalogue name)."""
        from ..backends.registry import resolve_backend
        from ..retrieval.embeddings import get_embedder

        if sessions is None:
            from ..sessions import SessionStore

            sessions = SessionStore()
        self.backend = resolve_backend(backend, **llm_options)  # fail at start-up, not at the first message
        self.embedder = get_embedder(embedder)  # built lazily: nothing is loaded or downloaded here
        self.sessions = sessions
        self.owners = owners or Owners(owners_path_for(sessions))
        self.shelf = Shelf(characters_dir, self.owners, shared_imports)  # visitors' own characters: theirs
        self._bots: OrderedDict[tuple, Chatbot] = OrderedDict()
        self._live: dict[Any, Live] = {}  # session id -> the reply being streamed (or just stopped)
        self._lock = threading.Lock()
        self.terminal_chats = terminal_chats
        self.transcript = Transcript(sessions, self.shelf)
        self.settings = SettingsPanel(lambda: self.backend, self.default_character)
        self.edits = Edits(sessions, self.owners, self.shelf, self.transcript, self._live, self.regenerate,
                           terminal=terminal_chats)
        self.chats = ChatList(sessions, self.owners, self.shelf, self.transcript, self.forget_chat, self.new_chat,
                              terminal=terminal_chats)
        self.add = AddCharacter(self.shelf, self.pick)
        self.memory = ChatMemoryPanel(sessions, self.owners, self.shelf, self.bot, self.chats.session_choices)
        self.better = BetterModel(lambda: self.backend, self.switch_backend, self.settings.backend_info, better_model)
        self.panel = CharacterPanel(self.shelf, self.pick, self.character_view, self.default_character,
                                    self.forget_bots, self.add.import_character, terminal=terminal_chats)
        self.group = GroupPanel(sessions, self.owners, self.shelf, lambda: self.backend, self.embedder)

    def default_character(self) -> str:
        """The character a page opens on: one the model can speak (the embedded model: an English one)."""
        entry = self.backend.model_entry
        speaks = entry.speaks if entry is not None and entry.languages else None
        return self.shelf.default(speaks)

    def switch_backend(self, model: str) -> None:
        """Answer with the local model ``model`` from now on (after "Get a better model"); chatbots are rebuilt."""
        from ..backends.registry import resolve_backend

        self.backend = resolve_backend("llama_cpp", model=model)
        self.forget_bots()

    def forget_bots(self) -> None:
        """Drop the cached chatbots (the backend or a character changed); they are rebuilt from the store."""
        with self._lock:
            self._bots.clear()

    def forget_chat(self, session_id: Any) -> None:
        """Drop what the demo holds of a deleted chat: its settings and its cached chatbots."""
        self.settings.forget(session_id)
        with self._lock:
            for key in [k for k in self._bots if k[0] == session_id]:
                del self._bots[key]

    # -- characters (delegated to the shelf) -------------------------------------------------------
    def choices(self, owner: str = "") -> list[tuple[str, str]]:
        """Dropdown choices for the browser with owner digest ``owner``: (label, folder name)."""
        return self.shelf.choices(owner)

    def character(self, name: str):
        """The loaded character of a folder."""
        return self.shelf.character(name)

    def warm(self) -> None:
        """Load the embedder and every character's scene index now (run in a thread at start-up), so the
        first visitor does not wait for them. Local work only: indexes are cached on disk."""
        from ..retrieval.index import index_for

        for name in list(self.shelf.entries):
            try:
                index_for(self.character(name), self.embedder)
            except Exception as exc:  # a broken character must not stop the others; its chat will say why
                logger.warning("chatharuhi demo: could not index %s: %s", name, exc)

    def character_view(self, name: str) -> View:
        """Everything on the page that belongs to a character: card, avatar, bubbles' avatar."""
        avatar, note = self.shelf.avatar(name)
        card = self.shelf.card(name) + (f"\n\n*{literal(note)}*" if note else "")
        return {"character": name, "card": card, "avatar": avatar}

    # -- chatbots --------------------------------------------------------------------------------
    def bot(self, session_id: Any, settings: Settings | None = None) -> "Chatbot":
        """The chatbot of a stored session, with its history read from the store (the truth, shared by tabs)."""
        from ..chat.chatbot import Chatbot
        from ..prompting.persona import Persona

        settings = settings or self.settings.of(session_id) or Settings()
        key = (session_id, settings.bot_key())
        with self._lock:
            bot = self._bots.get(key)
            if bot is not None:
                self._bots.move_to_end(key)
        session = self.sessions.get(session_id)
        if bot is None:
            budgets = {k: v for k, v in (("story_tokens", settings.story_tokens),
                                         ("history_tokens", settings.history_tokens)) if v is not None}
            persona = Persona(session.user_role, settings.persona.strip()) if settings.persona.strip() else None
            bot = Chatbot(character=self.character(self.shelf.folder_of(session.character)), llm=self.backend,
                             embedder=self.embedder, session=session, sessions=self.sessions, persona=persona,
                             **budgets)
            with self._lock:
                bot = self._bots.setdefault(key, bot)
                while len(self._bots) > BOT_CACHE_SIZE:
                    self._bots.popitem(last=False)
        else:
            bot.dialogue.reload()  # another tab may have changed the chat
        return bot

    # -- the browser and its chats ---------------------------------------------------------------
    def start(self, token: Any = "", name: str | None = None) -> View:
        """A page opened: the chat this browser had open last (after a reload or a restart), else the default
        character and its greeting; this browser's chats with that character (a token if it has none)."""
        token = token if valid_token(token) else _new_token()
        owner = owner_key(token)
        last = self.owners.last_open(token) if name is None else None
        if last is not None and self.owners.owns(last, token, terminal=self.terminal_chats):
            try:
                view = self.resume(last, token)
                view.update(browser=token, choices=self.choices(owner), model_line=self.better.line(),
                            better_visible=self.better.offered())
                return view
            except InputError:  # its character is gone: open as new
                pass
        view = self.pick(name or self.default_character(), "", Tab(owner=owner), token)
        view.update(browser=token, choices=self.choices(owner), model_line=self.better.line(),
                    better_visible=self.better.offered())
        return view

    def pick(self, name: str, user_role: str, tab: Tab | None, token: Any = None) -> View:
        """Pick a character: a fresh chat that opens with its greeting; the user's typed name is kept."""
        owner = tab.owner if tab else ""
        self.shelf.check_visible(name, owner)  # another visitor's own character is not there for this one
        if tab is not None and tab.character == name:
            return {}  # already chatting with this character (and dropdowns may report one pick twice)
        old_default = self.shelf.default_role(tab.character) if tab and tab.character in self.shelf.entries else ""
        typed = (user_role or "").strip()
        role = typed if typed and typed != old_default else self.shelf.default_role(name)
        new = Tab(character=name, user_role=role, settings=tab.settings if tab else Settings(), owner=owner)
        return {"tab": new, **self.character_view(name), **self.panel.view(name, owner), "user_role": role,
                "chat": self.transcript.messages(new), "sessions": (self.chats.session_choices(token, name), None),
                "search": "", "status": "", "partial": False, "swipes": "", **trace_view(None, None)}

    def new_chat(self, user_role: str, tab: Tab | None) -> View:
        """Start over with the same character; the old chat stays in the chat list."""
        name = tab.character if tab and tab.character else self.default_character()
        role = (user_role or "").strip() or self.shelf.default_role(name)
        new = Tab(character=name, user_role=role, settings=tab.settings if tab else Settings(),
                  owner=tab.owner if tab else "")
        return {"tab": new, "chat": self.transcript.messages(new), "status": "", "message": "", "partial": False,
                "swipes": "", **trace_view(None, None)}

    # -- replies ---------------------------------------------------------------------------------
    def send(self, text: str, user_role: str, tab: Tab | None, token: Any) -> Iterator[View]:
        """Send a message: stream the reply into the chat; the turn is stored when the reply completes."""
        text = (text or "").strip()
        tab = tab or Tab(character=self.default_character())
        if not text:
            raise InputError("empty message: type something first")
        if not valid_token(token):
            raise InputError("this page has no browser token yet: reload the page")
        role = (user_role or "").strip() or tab.user_role or self.shelf.default_role(tab.character)
        if tab.session_id is None:
            session = self.sessions.create(self.character(tab.character).name, role, title=title_of(text))
            self.owners.claim(session.id, token)
            self.settings.keep(session.id, tab.settings)
            tab = replace(tab, session_id=session.id)
        else:
            self.owners.check(tab.session_id, token, terminal=self.terminal_chats)
        self.owners.opened(tab.session_id, token)
        self.transcript.cut.pop(tab.session_id, None)
        tab = replace(tab, user_role=role)
        name = self.shelf.display_name(tab.character)
        shown = self.transcript.messages(tab) + [{"role": "user", "content": bubble(role, text)}]
        live = self._live[tab.session_id] = Live("send", text, role, {})  # from now on Stop can find it
        yield {"tab": tab, "message": "", "partial": False, "swipes": "",
               "chat": shown + [{"role": "assistant", "content": bubble(name, "")}],
               "status": f"{literal(name)} is replying…"}
        bot = self.bot(tab.session_id)  # the first chat with a character may build its index first
        reply = bot.stream(text, role=role, **self._sampling(tab))
        yield from self._stream(reply, live, shown, tab)
        yield self._after_reply(bot, tab, token, reply)

    def regenerate(self, tab: Tab | None, token: Any = None) -> Iterator[View]:
        """Answer the last message again, sampled anew; the earlier replies stay as swipes."""
        if tab is None or tab.session_id is None or not self.sessions.turns(tab.session_id):
            raise InputError("nothing to regenerate yet: send a message first")
        self.owners.check(tab.session_id, token, terminal=self.terminal_chats)
        self.transcript.fresh(tab)  # the reply to regenerate must be the one this tab shows
        self.transcript.cut.pop(tab.session_id, None)
        bot = self.bot(tab.session_id)
        last = bot.history[-1]
        shown = self.transcript.messages(tab)[:-1]  # everything but the reply being replaced
        name = self.shelf.display_name(tab.character)
        live = self._live[tab.session_id] = Live("regenerate", last.text, last.user_role, {})
        yield {"chat": shown + [{"role": "assistant", "content": bubble(name, "")}], "status": "regenerating…",
               "partial": False}
        reply = bot.regenerate(**self._sampling(tab, anew=True))
        yield from self._stream(reply, live, shown, tab)
        yield self._after_reply(bot, tab, token, reply)

    def continue_reply(self, tab: Tab | None, token: Any = None) -> Iterator[View]:
        """Extend the last reply where it stopped (a reply cut by the length limit, say): the model goes on from
        its own text (a local model's prefill); the longer reply replaces the stored one."""
        if tab is None or tab.session_id is None or not self.sessions.turns(tab.session_id):
            raise InputError("nothing to continue yet: send a message first")
        self.owners.check(tab.session_id, token, terminal=self.terminal_chats)
        self.transcript.fresh(tab)
        if not self.backend.supports_prefill:
            raise InputError(f"the {self.backend.name} backend cannot go on from a reply's own text: press "
                             "Regenerate for a new reply, or raise the maximum reply length in Settings")
        bot = self.bot(tab.session_id)
        last = bot.history[-1]
        self.transcript.cut.pop(tab.session_id, None)
        shown = self.transcript.messages(tab)[:-1]
        name = self.shelf.display_name(tab.character)
        live = self._live[tab.session_id] = Live("continue", last.text, last.user_role, {})
        yield {"chat": shown + [{"role": "assistant", "content": bubble(name, last.reply)}],
               "status": f"{literal(name)} goes on…", "partial": False}
        reply = bot.continue_reply(**self._sampling(tab))
        yield from self._stream(reply, live, shown, tab)
        yield self._after_reply(bot, tab, token, reply)

    def _sampling(self, tab: Tab, anew: bool = False) -> dict[str, Any]:
        """Per-reply options: the panel's temperature; a regenerated reply gets a fresh seed and is never greedy."""
        options: dict[str, Any] = {}
        temperature = tab.settings.temperature
        if anew:
            base = temperature if temperature is not None else self.backend.temperature
            temperature = max(base if base is not None else REGENERATE_MIN_TEMPERATURE, REGENERATE_MIN_TEMPERATURE)
            if self.backend.seed is not None:  # local models sample with a fixed seed
                options["seed"] = random.randrange(2**31)
        if temperature is not None:
            options["temperature"] = float(temperature)
        if tab.settings.max_reply_tokens is not None:
            options["max_tokens"] = tab.settings.max_reply_tokens
        return options

    def _stream(self, reply: "Reply", live: Live, shown: list[dict], tab: Tab) -> Iterator[View]:
        name = self.shelf.display_name(tab.character)
        live.trace = reply.trace.as_dict()
        for chunk in reply:
            live.reply += chunk
            yield {"chat": shown + [{"role": "assistant", "content": bubble(name, live.reply)}]}
        live.done = True

    def _after_reply(self, bot: "Chatbot", tab: Tab, token: Any, reply: "Reply | None" = None) -> View:
        self._live.pop(tab.session_id, None)
        if reply is not None and reply.finish_reason == "length":  # kept up to a word end (Reply): say so
            self.transcript.cut[tab.session_id] = reply.options.get("max_tokens") or 0
        view = trace_view(bot.last_trace.as_dict() if bot.last_trace else None, bot.character)
        reason = no_scene_reason(view["trace"]) if view["trace"] else ""
        tab = self.transcript.seen(tab)
        cut = self.transcript.cut.get(tab.session_id)
        status = f"⚠ {literal(reason)}" if reason else (
            f"the reply reached the maximum reply length ({cut} tokens): press **Continue** to go on, or raise the "
            "length in Settings" if cut else "")
        return {"tab": tab, "sessions": (self.chats.session_choices(token, tab.character), tab.session_id),
                "chat": self.transcript.messages(tab), "status": status, "swipes": self.transcript.swipe_label(tab),
                **view}

    # -- resuming ----------------------------------------------------------------------------------
    def resume(self, session_id: Any, token: Any, tab: Tab | None = None) -> View:
        """Open one of this browser's chats where it left off."""
        if session_id is None or session_id == "":
            return {}
        self.owners.check(session_id, token, terminal=self.terminal_chats)
        self.owners.opened(session_id, token)
        s = self.sessions.get(session_id)
        name = self.shelf.folder_of(s.character)
        turns = self.sessions.turns(s.id)
        settings = self.settings.of(s.id) or Settings()
        role = turns[-1].user_role if turns else s.user_role
        new = self.transcript.seen(Tab(character=name, session_id=s.id, user_role=role, settings=settings,
                                       owner=owner_key(token)))
        trace = self.sessions.trace(s.id, -1) if turns else None
        return {"tab": new, **self.character_view(name), **self.panel.view(name, new.owner), "user_role": new.user_role,
                "sessions": (self.chats.session_choices(token, name), s.id), "chat": self.transcript.messages(new),
                "message": "", "status": f"resumed: {literal(s.title or '(untitled)')}", "partial": False,
                "swipes": self.transcript.swipe_label(new), "title": s.title or "", **self.settings.settings_view(new),
                **trace_view(trace, self.character(name))}


def _new_token() -> str:
    from ..sessions.owners import new_token

    return new_token()
