"""The demo's handlers around chats rather than inside them: this browser's chat list, rename, delete,
export (JSONL, Markdown), the persona and settings panels, and adding characters (import, create)."""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import DEFAULT_HISTORY_TOKENS, DEFAULT_REPLY_RESERVE, DEFAULT_STORY_TOKENS
from ..errors import ChatHaruhiError, InputError
from .render import literal
from .state import (
    MAX_BUDGET_TOKENS,
    MAX_REPLY_TOKENS,
    MAX_TITLE_CHARS,
    MIN_BUDGET_TOKENS,
    MIN_REPLY_TOKENS,
    SESSION_LIST_SIZE,
    Settings,
    Tab,
    View,
)

if TYPE_CHECKING:
    from .app import WebDemo

EXPORT_FORMATS = ("jsonl", "markdown")
MAX_TEMPERATURE = 2.0


class ChatListHandlers:
    """Chat list, rename, delete, export, settings and new characters (mixed into ``WebDemo``)."""

    # -- the chat list ---------------------------------------------------------------------------
    def session_choices(self: "WebDemo", token: Any, character: str | None = None,
                        query: str = "") -> list[tuple[str, Any]]:
        """This browser's chats that still exist (and, on this machine, the terminal's), newest first, as (label,
        id): the chats with ``character`` (a folder name), or with ``query``, every chat whose title or messages
        contain it."""
        found = []
        query = " ".join((query or "").split()).casefold()[:MAX_TITLE_CHARS]
        stored = self._stored_name(character) if character and not query else None
        for sid in self.owners.sessions(token, terminal=self.terminal_chats):
            try:
                s = self.sessions.get(sid)
            except (ChatHaruhiError, LookupError):
                continue  # deleted from the store by other means
            if stored is not None and s.character != stored:
                continue
            if query and not self._matches(s, query):
                continue
            found.append(s)
        found.sort(key=lambda s: s.updated, reverse=True)
        return [(self._label(s), s.id) for s in found[:SESSION_LIST_SIZE]]

    def _stored_name(self: "WebDemo", folder: str) -> str | None:
        """The name a session stores for the character of ``folder``."""
        try:
            return self.character(folder).name
        except (ChatHaruhiError, LookupError):
            return folder

    def _matches(self: "WebDemo", s, query: str) -> bool:
        if query in (s.title or "").casefold():
            return True
        return any(query in t.text.casefold() or query in t.reply.casefold() for t in self.sessions.turns(s.id))

    def search_chats(self: "WebDemo", query: str, tab: Tab | None, token: Any = None) -> View:
        """The chat list for the search box: the character's chats when empty, else every chat that matches."""
        character = tab.character if tab else None
        chats = self.session_choices(token, character, query)
        selected = tab.session_id if tab and any(sid == tab.session_id for _, sid in chats) else None
        note = "" if chats or not (query or "").strip() else f"no chat contains “{literal(query.strip())}”"
        return {"sessions": (chats, selected), "status": note}

    def _label(self: "WebDemo", s) -> str:
        try:
            shown = self.shelf.display_name(self.shelf.folder_of(s.character))
        except InputError:
            shown = s.character
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.updated))
        return f"{shown} · {s.title or '(untitled)'} · {when}"

    def rename_chat(self: "WebDemo", title: str, tab: Tab | None, token: Any = None) -> View:
        """Give the open chat a new title."""
        title = " ".join((title or "").split())
        if tab is None or tab.session_id is None:
            raise InputError("nothing to rename yet: send a message first")
        if not title:
            raise InputError("the new title is empty")
        if len(title) > MAX_TITLE_CHARS:
            raise InputError(f"the title is {len(title)} characters; keep it under {MAX_TITLE_CHARS}")
        self.owners.check(tab.session_id, token, terminal=self.terminal_chats)
        self.sessions.rename(tab.session_id, title)
        tab = self.seen(tab)
        return {"tab": tab, "sessions": (self.session_choices(token, tab.character), tab.session_id), "title": title,
                "status": f"renamed to “{literal(title)}”"}

    def delete_chat(self: "WebDemo", tab: Tab | None, token: Any = None) -> View:
        """Delete the open chat for good, then start a new one with the same character."""
        if tab is None or tab.session_id is None:
            raise InputError("this chat is not saved yet: there is nothing to delete")
        self.owners.check(tab.session_id, token, terminal=self.terminal_chats)
        sid = tab.session_id
        self.sessions.delete(sid)
        self.owners.forget(sid)
        self._settings.pop(sid, None)
        with self._lock:
            for key in [k for k in self._bots if k[0] == sid]:
                del self._bots[key]
        view = self.new_chat(tab.user_role, tab)
        return {**view, "sessions": (self.session_choices(token, tab.character), None), "title": "",
                "status": "chat deleted"}

    def export_chat(self: "WebDemo", fmt: str, tab: Tab | None, token: Any = None) -> View:
        """Write the open chat to a file to download: JSONL (every reply and trace) or Markdown (to read)."""
        if fmt not in EXPORT_FORMATS:
            raise InputError(f"unknown export format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
        if tab is None or tab.session_id is None:
            raise InputError("nothing to export yet: send a message first")
        self.owners.check(tab.session_id, token, terminal=self.terminal_chats)
        s = self.sessions.get(tab.session_id)
        name = self.shelf.display_name(tab.character)
        if fmt == "jsonl":
            body, suffix = self.sessions.export(s.id, "jsonl"), ".jsonl"
        else:
            lines = [f"# {name} — {s.title or '(untitled)'}", "",
                     f"*Exported from chatharuhi on {time.strftime('%Y-%m-%d %H:%M')}.*", ""]
            for t in self.sessions.turns(s.id):
                lines += [f"**{t.user_role}**: {t.text}", "", f"**{name}**: {t.reply}", ""]
            body, suffix = "\n".join(lines), ".md"
        folder = Path(tempfile.mkdtemp(prefix="chatharuhi-export-"))
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{tab.character}-{s.title or s.id}")[:60]
        path = folder / f"{stem}{suffix}"
        path.write_text(body, encoding="utf-8")
        return {"export_file": str(path), "status": f"exported as {literal(path.name)}"}

    # -- persona and settings --------------------------------------------------------------------
    def settings_view(self: "WebDemo", tab: Tab) -> View:
        """The panels' fields for a tab (the values in use: the chat's own, else the defaults), and the backend."""
        s, default = tab.settings, self.setting_defaults()
        return {"persona": s.persona, "backend_info": self.backend_info(),
                **{k: default[k] if getattr(s, k) is None else getattr(s, k) for k in default}}

    def setting_defaults(self: "WebDemo") -> dict[str, Any]:
        """What a chat uses when its settings leave a value unset: the backend's temperature and budgets."""
        hint = getattr(self.backend, "budget_hint", {})
        return {"temperature": getattr(self.backend, "temperature", None),
                "story_tokens": hint.get("story_tokens", DEFAULT_STORY_TOKENS),
                "history_tokens": hint.get("history_tokens", DEFAULT_HISTORY_TOKENS),
                "max_reply_tokens": hint.get("reply_reserve", DEFAULT_REPLY_RESERVE)}

    def backend_info(self: "WebDemo") -> str:
        """Which backend and model answer, in one line."""
        b = self.backend
        model = getattr(b, "model", None) or getattr(b, "model_path", None)
        model = Path(model).name if isinstance(model, (str, Path)) and "/" in str(model) else model
        temp = getattr(b, "temperature", None)
        parts = [f"backend **{b.name}**", f"model **{model}**" if model else "",
                 f"context window {b.context_window} tokens", f"default temperature {temp}" if temp is not None else ""]
        return " · ".join(p for p in parts if p)

    def save_settings(self: "WebDemo", persona: str, temperature: Any, story_tokens: Any, history_tokens: Any,
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
            self._settings[tab.session_id] = settings
        return {"tab": tab, "status": "settings saved for this chat: the next reply uses them"}

    # -- new characters --------------------------------------------------------------------------
    def import_character(self: "WebDemo", file: Any, name: str = "", tab: Tab | None = None,
                         as_copy: bool = False) -> View:
        """A dropped card PNG/JSON, .charx or ChatHaruhi zip becomes a character, opened at once. A name that is
        taken is no error: the page offers to open the existing character or to import a copy (``as_copy``)."""
        from .characters import ImportClash

        path = getattr(file, "name", file)
        if not path:
            raise InputError("nothing to import: drop a card PNG/JSON, a .charx or a ChatHaruhi zip")
        try:
            folder = self.shelf.import_file(path, name, owner=tab.owner if tab else "", as_copy=as_copy)
        except ImportClash as clash:
            existing = self.shelf.display_name(clash.existing)
            shown = f"{existing} ({clash.existing})" if existing != clash.existing else clash.existing
            return {"clash": (clash.existing, clash.free),
                    "status": f"“{literal(shown)}” is already one of the characters: open it, or import "
                              f"{literal(clash.file)} as a copy called “{literal(clash.free)}”"}
        shown = self.shelf.display_name(folder)
        named = "" if folder == shown else f" as {literal(folder)}"  # a name another character has stays theirs
        view = self._opened(folder, tab, f"imported {literal(shown)}{named}" + (" (a copy)" if as_copy else ""))
        return {**view, "import_file": None, "import_name": "", "clash": None}  # the drop zone is ready again

    def create_character(self: "WebDemo", name: str, display_name: str, prompt: str, scenes: str,
                         scene_files: Any = None, avatar: Any = None, language: str = "auto", greeting: str = "",
                         tab: Tab | None = None) -> View:
        """The form's character, written as a folder, validated, then opened."""
        files = [getattr(f, "name", f) for f in (scene_files or [])]
        folder = self.shelf.create(name, display_name, prompt, scenes, files, getattr(avatar, "name", avatar),
                                   owner=tab.owner if tab else "", language=language or "auto",
                                   greeting=greeting or "")
        view = self._opened(folder, tab, f"created {literal(self.shelf.display_name(folder))}")
        return {**view, "form_clear": True}

    def _opened(self: "WebDemo", folder: str, tab: Tab | None, status: str) -> View:
        view = self.pick(folder, tab.user_role if tab else "", tab)
        return {**view, "choices": self.choices(tab.owner if tab else ""), "status": status}


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

