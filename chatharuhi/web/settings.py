"""The demo's persona and settings panels: the values a chat uses (its own, else the backend's defaults), the
backend in one line, and saving the panels for a chat (checked: numbers in range, the defaults kept as defaults)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

from ..config import DEFAULT_HISTORY_TOKENS, DEFAULT_REPLY_RESERVE, DEFAULT_STORY_TOKENS
from ..errors import InputError
from .state import MAX_BUDGET_TOKENS, MAX_REPLY_TOKENS, MIN_BUDGET_TOKENS, MIN_REPLY_TOKENS, Settings, Tab, View

MAX_TEMPERATURE = 2.0


class SettingsPanel:
    """Each chat's panel settings (for this server's lifetime), over the backend in use.

    ``backend``: returns the backend that answers now ("Get a better model" switches it); ``default_character``:
    the character a tab without one opens on."""

    def __init__(self, backend: Callable[[], Any], default_character: Callable[[], str]):
        self.backend, self.default_character = backend, default_character
        self.chosen: dict[Any, Settings] = {}  # session id -> its panel settings

    def of(self, session_id: Any) -> Settings | None:
        """The settings saved for a stored chat (None: none saved on this server)."""
        return self.chosen.get(session_id)

    def keep(self, session_id: Any, settings: Settings) -> None:
        """Remember ``settings`` for a stored chat."""
        self.chosen[session_id] = settings

    def forget(self, session_id: Any) -> None:
        """Drop a deleted chat's settings."""
        self.chosen.pop(session_id, None)

    def settings_view(self, tab: Tab) -> View:
        """The panels' fields for a tab (the values in use: the chat's own, else the defaults), and the backend."""
        s, default = tab.settings, self.setting_defaults()
        return {"persona": s.persona, "backend_info": self.backend_info(),
                **{k: default[k] if getattr(s, k) is None else getattr(s, k) for k in default}}

    def setting_defaults(self) -> dict[str, Any]:
        """What a chat uses when its settings leave a value unset: the backend's temperature and budgets."""
        backend = self.backend()
        hint = backend.budget_hint
        return {"temperature": backend.temperature,
                "story_tokens": hint.get("story_tokens", DEFAULT_STORY_TOKENS),
                "history_tokens": hint.get("history_tokens", DEFAULT_HISTORY_TOKENS),
                "max_reply_tokens": hint.get("reply_reserve", DEFAULT_REPLY_RESERVE)}

    def backend_info(self) -> str:
        """Which backend and model answer, in one line."""
        b = self.backend()
        temp = b.temperature
        parts = [f"backend **{b.name}**", f"model **{b.describe()}**" if b.describe() != b.name else "",
                 f"context window {b.context_window} tokens", f"default temperature {temp}" if temp is not None else ""]
        return " · ".join(p for p in parts if p)

    def save_settings(self, persona: str, temperature: Any, story_tokens: Any, history_tokens: Any,
                      tab: Tab | None, max_reply_tokens: Any = None) -> View:
        """Apply the persona and settings panels to this chat (the next reply uses them)."""
        tab = tab or Tab(character=self.default_character())
        given = {"temperature": _number("temperature", temperature, 0.0, MAX_TEMPERATURE),
                 "story_tokens": _integer("story budget", story_tokens),
                 "history_tokens": _integer("history budget", history_tokens),
                 "max_reply_tokens": _reply_length(max_reply_tokens)}
        # The panel shows the defaults in use: saving them unchanged (e.g. with a new persona) keeps "default".
        default = self.setting_defaults()
        given = {k: None if v is not None and v == default[k] else v for k, v in given.items()}
        settings = Settings((persona or "").strip(), given["temperature"], given["story_tokens"],
                            given["history_tokens"], given["max_reply_tokens"])
        tab = replace(tab, settings=settings)
        if tab.session_id is not None:
            self.keep(tab.session_id, settings)
        return {"tab": tab, "status": "settings saved: the next reply uses them, in this chat and in the chats you "
                                      "open next in this tab"}


def _number(what: str, value: Any, low: float, high: float) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number, not {value!r}") from None
    if not low <= number <= high:
        raise InputError(f"{what} must be between {low} and {high}, not {number}")
    return number


def _reply_length(value: Any) -> int | None:
    number = _number("maximum reply length", value, MIN_REPLY_TOKENS, MAX_REPLY_TOKENS)
    return None if number is None else int(number)


def _integer(what: str, value: Any) -> int | None:
    number = _number(what, value, MIN_BUDGET_TOKENS, MAX_BUDGET_TOKENS)
    return None if number is None else int(number)
