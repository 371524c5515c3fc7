"""Who owns which chat (web visitors; terminal chats the demo lists): a random token per browser, and a table.

Each browser gets a random token on its first visit (kept in its localStorage). The server keeps,
in its own SQLite file, which session belongs to which token (as a SHA-256 digest, so the file
alone does not let anyone act as a browser). Every handler that opens, changes or exports a chat
checks the caller's token against that table: knowing a session id is not enough, and nothing the
page itself publishes (Gradio's ``/config``) helps an attacker.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ..config import home_dir
from ..errors import InputError, SessionError

OWNERS_FILE = "web_owners.sqlite3"
TERMINAL = "terminal"  # the owner of chats made with `chatharuhi chat` (never a token's digest: those are 64 hex)
TOKEN_BYTES = 32
MIN_TOKEN_CHARS = 32  # a shorter "token" was not made here: treat it as none
LOCK_TIMEOUT_S = 5.0


class NotYourChat(InputError):
    """A browser asked for a chat it does not own (or that no longer exists)."""


def new_token() -> str:
    """A fresh browser token."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def valid_token(token: Any) -> bool:
    """Whether ``token`` looks like one this server hands out."""
    return isinstance(token, str) and len(token) >= MIN_TOKEN_CHARS and token.isascii() and token.isprintable()


def owner_key(token: str) -> str:
    """What the table stores for a token."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def owners_path_for(store: Any) -> Path:
    """The owners file next to the session store's file, else in the chatharuhi home."""
    path = getattr(store, "path", None)
    if isinstance(path, (str, os.PathLike)):
        path = Path(path)
        return path.with_name(f"{path.stem}.{OWNERS_FILE}")
    return home_dir() / OWNERS_FILE


class Owners:
    """Session id -> owner digest, in one small SQLite file (WAL; safe across threads)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=LOCK_TIMEOUT_S, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS owners (session_id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
                             "created REAL NOT NULL)")
            self._db.execute("CREATE INDEX IF NOT EXISTS owners_owner ON owners(owner)")
            self._db.execute("CREATE TABLE IF NOT EXISTS last_open (owner TEXT PRIMARY KEY, session_id TEXT NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS characters (folder TEXT PRIMARY KEY, owner TEXT NOT NULL)")
        except (OSError, sqlite3.Error) as exc:
            raise SessionError(f"{self.path}: cannot open the demo's table of chat owners: {exc}") from None

    def _run(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise SessionError(f"{self.path}: cannot use the table of chat owners: {exc}") from None

    def claim(self, session_id: str, token: str) -> None:
        """Record that ``token``'s browser owns a new session."""
        self._run("INSERT INTO owners VALUES (?, ?, ?)", (str(session_id), owner_key(token), time.time()))

    def claim_terminal(self, session_id: str) -> None:
        """Record a chat made in the terminal (``chatharuhi chat``): the demo on this machine lists it too."""
        self._run("INSERT OR IGNORE INTO owners VALUES (?, ?, ?)", (str(session_id), TERMINAL, time.time()))

    def terminal_sessions(self) -> list[str]:
        """The ids of the chats made in the terminal."""
        return [r[0] for r in self._run("SELECT session_id FROM owners WHERE owner = ?", (TERMINAL,))]

    def owns(self, session_id: Any, token: Any, terminal: bool = False) -> bool:
        """Whether ``token``'s browser owns ``session_id`` (with ``terminal``: or it is a terminal chat)."""
        if not valid_token(token) or session_id in (None, ""):
            return False
        rows = self._run("SELECT owner FROM owners WHERE session_id = ?", (str(session_id),))
        if rows and terminal and rows[0][0] == TERMINAL:
            return True
        return bool(rows) and secrets.compare_digest(rows[0][0], owner_key(token))

    def check(self, session_id: Any, token: Any, terminal: bool = False) -> None:
        """Raise ``NotYourChat`` unless ``token``'s browser owns ``session_id`` (or, with ``terminal``, it is a
        terminal chat)."""
        if not self.owns(session_id, token, terminal):
            raise NotYourChat("that chat is not one of this browser's chats (or it was deleted)")

    def sessions(self, token: Any, terminal: bool = False) -> list[str]:
        """The ids of the sessions ``token``'s browser owns (with ``terminal``: and the terminal's chats)."""
        if not valid_token(token):
            return []
        owners = (owner_key(token), TERMINAL) if terminal else (owner_key(token),)
        marks = ", ".join("?" * len(owners))
        return [r[0] for r in self._run(f"SELECT session_id FROM owners WHERE owner IN ({marks})", owners)]

    def last_open(self, token: Any) -> str | None:
        """The chat this browser had open last (None: none yet)."""
        if not valid_token(token):
            return None
        rows = self._run("SELECT session_id FROM last_open WHERE owner = ?", (owner_key(token),))
        return rows[0][0] if rows else None

    def opened(self, session_id: Any, token: Any) -> None:
        """Remember that this browser has ``session_id`` open (None: a new chat not stored yet)."""
        if not valid_token(token):
            return
        if session_id in (None, ""):
            self._run("DELETE FROM last_open WHERE owner = ?", (owner_key(token),))
        else:
            self._run("INSERT OR REPLACE INTO last_open VALUES (?, ?)", (owner_key(token), str(session_id)))

    def claim_character(self, folder: str, owner: str) -> None:
        """Record that the browser with owner digest ``owner`` imported or made the character ``folder``."""
        self._run("INSERT OR REPLACE INTO characters VALUES (?, ?)", (folder, owner))

    def character_owners(self) -> dict[str, str]:
        """Character folder -> the owner digest of the browser that added it (its private characters)."""
        return dict(self._run("SELECT folder, owner FROM characters"))

    def forget(self, session_id: str) -> None:
        """Drop a deleted session's row."""
        self._run("DELETE FROM owners WHERE session_id = ?", (str(session_id),))
        self._run("DELETE FROM last_open WHERE session_id = ?", (str(session_id),))

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()
