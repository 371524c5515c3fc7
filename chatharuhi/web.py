"""The Gradio web demo (``chatharuhi demo``): pick a character, chat with streaming, see why it replied.

Two layers. ``WebDemo`` holds the handlers as plain Python (values in, a dict of named view fields
out), so tests call them without a browser. ``build_app`` lays out the Gradio Blocks and maps those
fields onto components. Gradio is imported only there, after analytics are switched off.

Isolation: each browser tab keeps its own ``Tab`` in ``gr.State``; the chatbots live in a small
server-side cache keyed by session id (each one bound to one stored session, all of one character
sharing one index); the list of a browser's own sessions is kept in that browser (``gr.BrowserState``),
so two visitors never see each other's chats.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from .config import home_dir
from .errors import ChatHaruhiError, InputError

if TYPE_CHECKING:
    import gradio

    from .character import Character
    from .chatbot import ChatHaruhi
    from .discovery import CharacterEntry
    from .sessions import SessionStore

DEFAULT_HOST = "127.0.0.1"  # loopback unless told otherwise
DEFAULT_PORT = 7860
WEB_INSTALL = "pip install 'chatharuhi[web]'"
AVATAR_FILES = ("avatar.png", "avatar.jpg", "avatar.jpeg", "avatar.webp", "avatar.gif")
BOT_CACHE_SIZE = 256  # live chatbots kept in memory; an evicted one is rebuilt from the session store
SESSION_LIST_SIZE = 50
TITLE_CHARS = 30
SECRET_FILE = "web_secret"  # key of the browser's stored session list; kept so the list survives a restart
STORAGE_KEY = "chatharuhi-sessions"
SCENE_HEADERS = ["scene", "score", "tokens", "in prompt", "note"]

logger = logging.getLogger("chatharuhi")
View = dict[str, Any]  # named view fields -> values; build_app maps the names onto components


@dataclass(frozen=True)
class Tab:
    """What one browser tab is doing: the character, and the stored session once the first turn exists."""

    character: str | None = None  # folder name
    session_id: Any = None  # None until the first message is sent
    user_role: str = ""


class WebDemo:
    """The demo's handlers without Gradio: each takes plain values and returns (or yields) a ``View``."""

    def __init__(self, backend: Any = None, characters_dir: Any = None, sessions: "SessionStore | None" = None,
                 embedder: Any = None, **llm_options: Any):
        from .backends.registry import resolve_backend
        from .discovery import list_characters
        from .embeddings import get_embedder

        if sessions is None:
            from .sessions import SessionStore

            sessions = SessionStore()
        self.backend = resolve_backend(backend, **llm_options)  # fail at start-up, not at the first message
        self.embedder = get_embedder(embedder)  # built lazily: nothing is loaded or downloaded here
        self.sessions = sessions
        self.characters_dir = characters_dir
        self.entries: dict[str, CharacterEntry] = {
            e.name: e for e in list_characters(characters_dir) if e.error is None}
        if not self.entries:
            raise InputError("no characters found: add a character folder or pass --characters-dir DIR")
        self._bots: OrderedDict[Any, ChatHaruhi] = OrderedDict()
        self._characters: dict[str, Character] = {}  # folder name -> loaded once, shared by its chatbots
        self._lock = threading.Lock()

    # -- characters ----------------------------------------------------------------------------
    def choices(self) -> list[tuple[str, str]]:
        """Dropdown choices: (label, folder name)."""
        shown = {name: self.display_name(name) for name in self.entries}
        return [(label if label == name else f"{label} ({name})", name) for name, label in shown.items()]

    def default_character(self) -> str:
        """The character shown when a page opens."""
        return "haruhi" if "haruhi" in self.entries else next(iter(self.entries))

    def _entry(self, name: str | None) -> "CharacterEntry":
        entry = self.entries.get(name or "")
        if entry is None:
            raise InputError(f"unknown character {name!r}; available: {', '.join(self.entries)}")
        return entry

    def character(self, name: str) -> "Character":
        """The loaded character of a folder (parsed once)."""
        from .character import load_character

        entry = self._entry(name)
        with self._lock:
            found = self._characters.get(name)
        if found is None:
            found = load_character(entry.path)
            with self._lock:
                found = self._characters.setdefault(name, found)
        return found

    def folder_of(self, stored: str) -> str:
        """The folder name of a character as a session stores it (``Character.name``: the manifest's name)."""
        if stored in self.entries:
            return stored
        for name, e in self.entries.items():
            if e.manifest and e.manifest.name == stored:
                return name
        raise InputError(f"the character {stored!r} of this chat is no longer installed")

    def greeting(self, name: str) -> list[dict]:
        """The character's greeting as the first chat message (shown, never sent to the model)."""
        m = self._entry(name).manifest
        return [{"role": "assistant", "content": m.greeting}] if m and m.greeting else []

    def display_name(self, name: str) -> str:
        """The human-facing name of a character folder."""
        m = self._entry(name).manifest
        return (m.display_name if m else None) or name

    def card(self, name: str) -> str:
        """A short Markdown card: display name and description."""
        m = self._entry(name).manifest
        return f"### {self.display_name(name)}\n\n{(m.description if m else None) or ''}".strip()

    def avatar(self, name: str):
        """The folder's avatar image (a PIL image, so Gradio serves it from its own cache), or None."""
        folder = self._entry(name).path
        for file in AVATAR_FILES:
            if (folder / file).is_file():
                from PIL import Image

                try:
                    with Image.open(folder / file) as img:
                        img.load()
                        return img.copy()
                except OSError:
                    return None
        return None

    def default_role(self, name: str) -> str:
        """The user's default in-story name for a character."""
        m = self._entry(name).manifest
        if m and m.user_role:
            return m.user_role
        return "User" if m and m.language and not m.language.startswith("zh") else "用户"

    def warm(self) -> None:
        """Load the embedder and every character's scene index now (run in a thread at start-up), so the
        first visitor does not wait for them. Local work only: indexes are cached on disk."""
        from .index import index_for

        for name in list(self.entries):
            try:
                index_for(self.character(name), self.embedder)
            except Exception as exc:  # a broken character must not stop the others; its chat will say why
                logger.warning("chatharuhi demo: could not index %s: %s", name, exc)

    # -- chatbots ------------------------------------------------------------------------------
    def bot(self, session_id: Any) -> "ChatHaruhi":
        """The chatbot bound to a stored session (cached; rebuilt from the store when evicted)."""
        from .chatbot import ChatHaruhi

        with self._lock:
            bot = self._bots.get(session_id)
            if bot is not None:
                self._bots.move_to_end(session_id)
                return bot
        session = self.sessions.get(session_id)
        bot = ChatHaruhi(character=self.character(self.folder_of(session.character)), llm=self.backend,
                         embedder=self.embedder, session=session, sessions=self.sessions)
        with self._lock:
            bot = self._bots.setdefault(session_id, bot)
            while len(self._bots) > BOT_CACHE_SIZE:
                self._bots.popitem(last=False)
        return bot

    def _messages(self, tab: Tab) -> list[dict]:
        msgs = self.greeting(tab.character) if tab.character else []
        if tab.session_id is not None:
            for t in self.sessions.turns(tab.session_id):
                msgs += [{"role": "user", "content": t.text}, {"role": "assistant", "content": t.reply}]
        return msgs

    # -- sessions list -------------------------------------------------------------------------
    def session_choices(self, owned: Iterable[Any] | None) -> list[tuple[str, Any]]:
        """This browser's sessions that still exist, newest first, as (label, id)."""
        found = []
        for sid in owned or ():
            try:
                found.append(self.sessions.get(sid))
            except (ChatHaruhiError, KeyError, LookupError):
                continue  # deleted, or from another store
        found.sort(key=lambda s: s.updated, reverse=True)
        return [(self._label(s), s.id) for s in found[:SESSION_LIST_SIZE]]

    def _label(self, s) -> str:
        try:
            shown = self.display_name(self.folder_of(s.character))
        except InputError:
            shown = s.character
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.updated))
        return f"{shown} · {s.title or '(untitled)'} · {when}"

    # -- handlers ------------------------------------------------------------------------------
    def start(self, owned: list | None = None, name: str | None = None) -> View:
        """A page opened: the default character, its greeting, and this browser's session list."""
        view = self.pick(name or self.default_character(), "", Tab())
        view["sessions"] = (self.session_choices(owned), None)
        return view

    def pick(self, name: str, user_role: str, tab: Tab | None) -> View:
        """Pick a character: a fresh chat that opens with its greeting; the user's typed name is kept."""
        self._entry(name)
        if tab is not None and tab.character == name:
            return {}  # already chatting with this character (and dropdowns may report one pick twice)
        old_default = self.default_role(tab.character) if tab and tab.character in self.entries else ""
        role = user_role.strip() if user_role and user_role.strip() != old_default else self.default_role(name)
        new = Tab(character=name, user_role=role)
        return {"tab": new, "character": name, "card": self.card(name), "avatar": self.avatar(name),
                "user_role": role, "chat": self.greeting(name), "status": "", **self._trace_view()}

    def new_chat(self, user_role: str, tab: Tab | None) -> View:
        """Start over with the same character; the old chat stays in the session list."""
        name = tab.character if tab and tab.character else self.default_character()
        role = (user_role or "").strip() or self.default_role(name)
        return {"tab": Tab(character=name, user_role=role), "chat": self.greeting(name), "status": "",
                "message": "", **self._trace_view()}

    def send(self, text: str, user_role: str, tab: Tab | None, owned: list | None) -> Iterator[View]:
        """Send a message: stream the reply into the chat; the turn is stored when the reply completes."""
        text = (text or "").strip()
        tab = tab or Tab(character=self.default_character())
        if not text:
            raise InputError("empty message: type something first")
        role = (user_role or "").strip() or tab.user_role or self.default_role(tab.character)
        owned = list(owned or [])
        if tab.session_id is None:
            stored = self.character(tab.character).name
            session = self.sessions.create(stored, role, title=_title(text))
            tab = replace(tab, session_id=session.id)
            owned = [session.id, *[s for s in owned if s != session.id]]
        tab = replace(tab, user_role=role)
        shown = self._messages(tab) + [{"role": "user", "content": text}]
        yield {"tab": tab, "owned": owned, "message": "", "chat": shown + [{"role": "assistant", "content": ""}],
               "status": f"{self.display_name(tab.character)} is replying…"}
        bot = self.bot(tab.session_id)  # the first chat with a character may build its index first
        reply = bot.stream(text, role=role)
        yield from self._stream(reply, shown, tab)
        yield {"tab": tab, "owned": owned, "sessions": (self.session_choices(owned), tab.session_id),
               "chat": self._messages(tab), "status": "", **self._bot_trace(bot, tab)}

    def regenerate(self, tab: Tab | None) -> Iterator[View]:
        """Answer the last message again; the earlier reply is kept as an alternative."""
        if tab is None or tab.session_id is None or not self.sessions.turns(tab.session_id):
            raise InputError("nothing to regenerate yet: send a message first")
        bot = self.bot(tab.session_id)
        shown = self._messages(tab)[:-1]  # everything but the reply being replaced
        yield {"chat": shown + [{"role": "assistant", "content": ""}], "status": "regenerating…"}
        reply = bot.regenerate()
        yield from self._stream(reply, shown, tab)
        n = len(bot.alternatives(-1))
        yield {"chat": self._messages(tab), "status": f"reply {n} of {n} (the earlier ones are kept)",
               **self._bot_trace(bot, tab)}

    def _stream(self, reply, shown: list[dict], tab: Tab) -> Iterator[View]:
        text = ""
        for chunk in reply:
            text += chunk
            yield {"chat": shown + [{"role": "assistant", "content": text}]}

    def resume(self, session_id: Any, owned: list | None) -> View:
        """Open one of this browser's sessions where it left off."""
        if session_id is None or session_id == "":
            return {}
        if session_id not in (owned or []):
            raise InputError("that chat is not in this browser's list")
        s = self.sessions.get(session_id)
        name = self.folder_of(s.character)
        turns = self.sessions.turns(s.id)
        tab = Tab(character=name, session_id=s.id, user_role=turns[-1].user_role if turns else s.user_role)
        trace = self.sessions.trace(s.id, -1) if turns else None
        return {"tab": tab, "character": name, "card": self.card(name), "avatar": self.avatar(name),
                "user_role": tab.user_role, "chat": self._messages(tab), "message": "",
                "status": f"resumed: {s.title or '(untitled)'}", **self._trace_view(trace, name)}

    # -- the "why this reply" panel ------------------------------------------------------------
    def _trace_view(self, trace: dict | None = None, name: str | None = None) -> View:
        """Summary, scene table, scene texts and the raw trace of the last reply (``Trace.as_dict()``)."""
        if not trace:
            return {"summary": "No reply yet in this chat.", "scenes": [], "scene_texts": "", "trace": None}
        parts = " · ".join(f"{k} {v}" for k, v in trace.get("parts", {}).items())
        scenes = trace.get("scenes", [])
        included = trace.get("included_scenes", [s["id"] for s in scenes if s.get("included")])
        summary = (f"**Prompt: {trace.get('total_tokens')} of {trace.get('budget')} tokens** ({parts}); "
                   f"story used {trace.get('story_fill', 0):.0%} of its {trace.get('story_budget')}-token share; "
                   f"{len(included)} scenes and {sum(bool(t.get('included')) for t in trace.get('turns', []))} "
                   "earlier turns went into the prompt.")
        rows = [[s["id"], "" if s.get("score") is None else round(s["score"], 4), s.get("tokens", 0),
                 "yes" if s.get("included") else "no", s.get("reason", "")] for s in scenes]
        texts = []
        character = self.character(name) if name else None
        for s in scenes:
            if not s.get("included") or character is None:
                continue
            try:
                text = character.scene(s["id"]).text
            except KeyError:
                continue
            score = f" — score {s['score']:.4f}" if s.get("score") is not None else ""
            quoted = "\n".join(f"> {line}  " if line.strip() else ">" for line in text.splitlines())
            texts.append(f"**{s['id']}**{score}\n\n{quoted}")
        return {"summary": summary, "scenes": rows, "scene_texts": "\n\n".join(texts), "trace": trace}

    def _bot_trace(self, bot: "ChatHaruhi", tab: Tab) -> View:
        return self._trace_view(bot.last_trace.as_dict() if bot.last_trace else None, tab.character)


def _title(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= TITLE_CHARS else first[: TITLE_CHARS - 1] + "…"


def web_secret() -> str:
    """The key of each browser's stored session list, kept in the home folder so lists survive a restart.

    Not a security boundary (Gradio hands it to the page): what keeps visitors apart is that session
    ids are random (uuid4) and a browser only ever learns its own."""
    path = home_dir() / SECRET_FILE
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(value)
    return value


def import_gradio():
    """Import Gradio with analytics (and its version check) off; a missing install says what to run."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError:
        from .errors import BackendUnavailable

        raise BackendUnavailable(f"the web demo needs Gradio: {WEB_INSTALL}") from None
    return gradio


def build_app(backend: Any = None, characters_dir: Any = None, sessions: "SessionStore | None" = None,
              embedder: Any = None, **llm_options: Any) -> "gradio.Blocks":
    """The demo's Gradio Blocks (not launched); ``app.demo`` is its ``WebDemo``."""
    from .web_layout import layout

    gr = import_gradio()
    demo = WebDemo(backend, characters_dir, sessions, embedder, **llm_options)
    app = layout(gr, demo, secret=web_secret())
    app.demo = demo
    return app


def launch(app: "gradio.Blocks", host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
           block: bool = True, warm: bool = True) -> None:
    """Serve the app on ``host:port``: never shared through Gradio's tunnel, no browser opened; with
    ``warm``, the characters' indexes are built in the background meanwhile."""
    from .web_layout import CSS

    if warm and getattr(app, "demo", None) is not None:
        threading.Thread(target=app.demo.warm, name="chatharuhi-demo-warm", daemon=True).start()
    app.launch(server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=not block,
               ssr_mode=False, show_error=True, footer_links=[], css=CSS)
