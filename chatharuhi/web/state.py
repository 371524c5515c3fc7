"""What the web demo keeps per browser tab, and the named defaults of the demo (the floor every web_* module
stands on: it imports nothing of theirs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_HOST = "127.0.0.1"  # loopback unless told otherwise
DEFAULT_PORT = 7860
WEB_INSTALL = "pip install 'chatharuhi[web]'"
BOT_CACHE_SIZE = 256  # live chatbots kept in memory; an evicted one is rebuilt from the session store
SESSION_LIST_SIZE = 50
TITLE_CHARS = 30
MAX_TITLE_CHARS = 80
SECRET_FILE = "web_secret"  # encrypts the browser's stored token in localStorage (not what protects chats)
STORAGE_KEY = "chatharuhi-browser"
SCENE_HEADERS = ["scene", "score", "tokens", "in prompt", "note"]
REGENERATE_MIN_TEMPERATURE = 0.7  # a regenerated reply is sampled anew: never greedy, a fresh seed if supported
MIN_BUDGET_TOKENS, MAX_BUDGET_TOKENS = 0, 32_000
WEB_IMPORTS_DIR = "web_characters"  # under the home folder: characters a visitor added, seen by that browser only
MIN_REPLY_TOKENS, MAX_REPLY_TOKENS = 16, 4096  # the settings' maximum reply length

View = dict[str, Any]  # named view fields -> values; the layout maps the names onto components


@dataclass(frozen=True)
class Settings:
    """Per-chat settings from the persona and settings panels (``None``: the character's or backend's default)."""

    persona: str = ""  # the user's persona description (the name is the "your name in the story" field)
    temperature: float | None = None
    story_tokens: int | None = None
    history_tokens: int | None = None
    max_reply_tokens: int | None = None  # passed per reply as max_tokens (None: the backend's reply reserve)

    def bot_key(self) -> tuple:
        """What a chatbot is built with (temperature is passed per reply instead)."""
        return (self.persona.strip(), self.story_tokens, self.history_tokens)


@dataclass
class Live:
    """A reply being streamed, kept so Stop can show it and the user may keep it."""

    kind: str  # "send", "regenerate" or "continue"
    text: str
    role: str
    trace: dict
    reply: str = ""
    done: bool = False


@dataclass(frozen=True)
class Tab:
    """What one browser tab is doing: the character, and the stored session once the first turn exists."""

    character: str | None = None  # folder name
    session_id: Any = None  # None until the first message is sent
    user_role: str = ""
    seen: float = 0.0  # the session's ``updated`` when this tab last showed it: edits on a stale view are refused
    settings: Settings = field(default_factory=Settings)
    owner: str = ""  # this browser's owner digest (set when the page starts): the private characters it sees


def title_of(text: str) -> str:
    """A chat's title from its first message."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= TITLE_CHARS else first[: TITLE_CHARS - 1] + "…"
