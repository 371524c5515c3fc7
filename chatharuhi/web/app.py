"""The Gradio web demo (``chatharuhi demo``): pick a character, chat with streaming, see why it replied.

Two layers. ``WebDemo`` holds the handlers as plain Python (values in, a dict of named view fields
out), so tests call them without a browser; its handlers are spread over ``edit.py`` (stop, swipes,
edit, delete) and ``chats.py`` (chat list, export, settings, new characters). ``layout.py`` lays
out the Gradio Blocks and maps the fields onto components; ``demo.py`` builds and serves the app (Gradio is
imported only there, after analytics are switched off).

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
from .better_model import BetterModel
from .characters import Shelf
from .chats import ChatListHandlers
from .edit import EditHandlers
from .manage import CharacterPanel
from .owners import Owners, owner_key, owners_path_for, valid_token
from .render import bubble, literal
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

if TYPE_CHECKING:

    from ..chat.chatbot import Chatbot
    from ..chat.reply import Reply
    from ..sessions import SessionStore

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Tab", "WebDemo"]
logger = logging.getLogger("chatharuhi")


class WebDemo(EditHandlers, ChatListHandlers):
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
        self._settings: dict[Any, Settings] = {}  # session id -> its panel settings (this server's lifetime)
        self._live: dict[Any, Live] = {}  # session id -> the reply being streamed (or just stopped)
        self._cut: dict[Any, int] = {}  # session id -> the length limit that cut its last reply (shown, not stored)
        self._lock = threading.Lock()
        self.terminal_chats = terminal_chats
        self.better = BetterModel(self, better_model)
        self.panel = CharacterPanel(self)

    def default_character(self) -> str:
        """The character a page opens on: one the model can speak (the embedded model: an English one)."""
        entry = getattr(self.backend, "model_entry", None)
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

        settings = settings or self._settings.get(session_id) or Settings()
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
            limit = self._cut.get(tab.session_id)
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
                "chat": self.messages(new), "sessions": (self.session_choices(token, name), None), "search": "",
                "status": "", "partial": False, "swipes": "", **trace_view(None, None)}

    def new_chat(self, user_role: str, tab: Tab | None) -> View:
        """Start over with the same character; the old chat stays in the chat list."""
        name = tab.character if tab and tab.character else self.default_character()
        role = (user_role or "").strip() or self.shelf.default_role(name)
        new = Tab(character=name, user_role=role, settings=tab.settings if tab else Settings(),
                  owner=tab.owner if tab else "")
        return {"tab": new, "chat": self.messages(new), "status": "", "message": "", "partial": False,
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
            self._settings[session.id] = tab.settings
            tab = replace(tab, session_id=session.id)
        else:
            self.owners.check(tab.session_id, token, terminal=self.terminal_chats)
        self.owners.opened(tab.session_id, token)
        self._cut.pop(tab.session_id, None)
        tab = replace(tab, user_role=role)
        name = self.shelf.display_name(tab.character)
        shown = self.messages(tab) + [{"role": "user", "content": bubble(role, text)}]
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
        self._fresh(tab)  # the reply to regenerate must be the one this tab shows
        self._cut.pop(tab.session_id, None)
        bot = self.bot(tab.session_id)
        last = bot.history[-1]
        shown = self.messages(tab)[:-1]  # everything but the reply being replaced
        name = self.shelf.display_name(tab.character)
        live = self._live[tab.session_id] = Live("regenerate", last.text, last.user_role, {})
        yield {"chat": shown + [{"role": "assistant", "content": bubble(name, "")}], "status": "regenerating…",
               "partial": False}
        reply = bot.regenerate(**self._sampling(tab, anew=True))
        yield from self._stream(reply, live, shown, tab)
        yield self._after_reply(bot, tab, token, reply)

    def _sampling(self, tab: Tab, anew: bool = False) -> dict[str, Any]:
        """Per-reply options: the panel's temperature; a regenerated reply gets a fresh seed and is never greedy."""
        options: dict[str, Any] = {}
        temperature = tab.settings.temperature
        if anew:
            base = temperature if temperature is not None else getattr(self.backend, "temperature", None)
            temperature = max(base if base is not None else REGENERATE_MIN_TEMPERATURE, REGENERATE_MIN_TEMPERATURE)
            if getattr(self.backend, "seed", None) is not None:  # local models sample with a fixed seed
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
            self._cut[tab.session_id] = reply.options.get("max_tokens") or 0
        view = trace_view(bot.last_trace.as_dict() if bot.last_trace else None, bot.character)
        reason = no_scene_reason(view["trace"]) if view["trace"] else ""
        tab = self.seen(tab)
        cut = self._cut.get(tab.session_id)
        status = f"⚠ {literal(reason)}" if reason else (
            f"the reply reached the maximum reply length ({cut} tokens): press **Continue** to go on, or raise the "
            "length in Settings" if cut else "")
        return {"tab": tab, "sessions": (self.session_choices(token, tab.character), tab.session_id),
                "chat": self.messages(tab), "status": status, "swipes": self.swipe_label(tab), **view}

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
        settings = self._settings.get(s.id) or Settings()
        new = self.seen(Tab(character=name, session_id=s.id, user_role=turns[-1].user_role if turns else s.user_role,
                            settings=settings, owner=owner_key(token)))
        trace = self.sessions.trace(s.id, -1) if turns else None
        return {"tab": new, **self.character_view(name), **self.panel.view(name, new.owner), "user_role": new.user_role,
                "sessions": (self.session_choices(token, name), s.id), "chat": self.messages(new),
                "message": "", "status": f"resumed: {literal(s.title or '(untitled)')}", "partial": False,
                "swipes": self.swipe_label(new), "title": s.title or "", **self.settings_view(new),
                **trace_view(trace, self.character(name))}


def _new_token() -> str:
    from .owners import new_token

    return new_token()
