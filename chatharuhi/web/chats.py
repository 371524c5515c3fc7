"""The demo's handlers around chats rather than inside them: this browser's chat list and its search, rename,
delete, and export (JSONL, Markdown)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import ChatHaruhiError, InputError
from .render import literal
from .state import MAX_TITLE_CHARS, SESSION_LIST_SIZE, Tab, View

if TYPE_CHECKING:
    from ..sessions import SessionStore
    from ..sessions.owners import Owners
    from .characters import Shelf
    from .transcript import Transcript

EXPORT_FORMATS = ("jsonl", "markdown")


class ChatList:
    """This browser's chats: listed, searched, renamed, deleted and exported, over the store and the owners table.

    ``forget_chat``: the demo drops what it holds of a deleted chat (its chatbots, its settings); ``new_chat``: the
    demo's handler that opens a fresh chat after a delete; ``terminal``: the terminal's chats count as this
    browser's (the demo on one's own machine)."""

    def __init__(self, sessions: "SessionStore", owners: "Owners", shelf: "Shelf", transcript: "Transcript",
                 forget_chat: Callable[[Any], None], new_chat: Callable[[str, Tab | None], View],
                 terminal: bool = False):
        self.sessions, self.owners, self.shelf, self.transcript = sessions, owners, shelf, transcript
        self.forget_chat, self.new_chat, self.terminal = forget_chat, new_chat, terminal

    # -- the chat list ---------------------------------------------------------------------------
    def session_choices(self, token: Any, character: str | None = None,
                        query: str = "") -> list[tuple[str, Any]]:
        """This browser's chats that still exist (and, on this machine, the terminal's), newest first, as (label,
        id): the chats with ``character`` (a folder name), or with ``query``, every chat whose title or messages
        contain it."""
        found = []
        query = " ".join((query or "").split()).casefold()[:MAX_TITLE_CHARS]
        stored = self._stored_name(character) if character and not query else None
        for sid in self.owners.sessions(token, terminal=self.terminal):
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

    def _stored_name(self, folder: str) -> str | None:
        """The name a session stores for the character of ``folder``."""
        try:
            return self.shelf.character(folder).name
        except (ChatHaruhiError, LookupError):
            return folder

    def _matches(self, s, query: str) -> bool:
        if query in (s.title or "").casefold():
            return True
        return any(query in t.text.casefold() or query in t.reply.casefold() for t in self.sessions.turns(s.id))

    def search_chats(self, query: str, tab: Tab | None, token: Any = None) -> View:
        """The chat list for the search box: the character's chats when empty, else every chat that matches."""
        character = tab.character if tab else None
        chats = self.session_choices(token, character, query)
        selected = tab.session_id if tab and any(sid == tab.session_id for _, sid in chats) else None
        note = "" if chats or not (query or "").strip() else f"no chat contains “{literal(query.strip())}”"
        return {"sessions": (chats, selected), "status": note}

    def _label(self, s) -> str:
        try:
            shown = self.shelf.display_name(self.shelf.folder_of(s.character))
        except InputError:
            shown = s.character
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.updated))
        return f"{shown} · {s.title or '(untitled)'} · {when}"

    def rename_chat(self, title: str, tab: Tab | None, token: Any = None) -> View:
        """Give the open chat a new title."""
        title = " ".join((title or "").split())
        if tab is None or tab.session_id is None:
            raise InputError("nothing to rename yet: send a message first")
        if not title:
            raise InputError("the new title is empty")
        if len(title) > MAX_TITLE_CHARS:
            raise InputError(f"the title is {len(title)} characters; keep it under {MAX_TITLE_CHARS}")
        self.owners.check(tab.session_id, token, terminal=self.terminal)
        self.sessions.rename(tab.session_id, title)
        tab = self.transcript.seen(tab)
        return {"tab": tab, "sessions": (self.session_choices(token, tab.character), tab.session_id), "title": title,
                "status": f"renamed to “{literal(title)}”"}

    def delete_chat(self, tab: Tab | None, token: Any = None) -> View:
        """Delete the open chat for good, then start a new one with the same character."""
        if tab is None or tab.session_id is None:
            raise InputError("this chat is not saved yet: there is nothing to delete")
        self.owners.check(tab.session_id, token, terminal=self.terminal)
        sid = tab.session_id
        self.sessions.delete(sid)
        self.owners.forget(sid)
        self.forget_chat(sid)
        view = self.new_chat(tab.user_role, tab)
        return {**view, "sessions": (self.session_choices(token, tab.character), None), "title": "",
                "status": "chat deleted"}

    def export_chat(self, fmt: str, tab: Tab | None, token: Any = None) -> View:
        """Write the open chat to a file to download: JSONL (every reply and trace) or Markdown (to read)."""
        if fmt not in EXPORT_FORMATS:
            raise InputError(f"unknown export format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
        if tab is None or tab.session_id is None:
            raise InputError("nothing to export yet: send a message first")
        self.owners.check(tab.session_id, token, terminal=self.terminal)
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
