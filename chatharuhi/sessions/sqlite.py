"""The embedded session store: one SQLite file (WAL mode) under the chatharuhi home folder.

The semantics are the contract's (base.py), and the operations are sql.py's: append-only turns, one
transaction per completed turn, so a crash (even ``kill -9``) mid-reply loses at most the reply that
was being streamed. This module opens the file, runs the transactions and explains SQLite's errors.

    sessions(id, character, user_role, title, created, updated)
    turns(id, session_id, idx, user_role, text, created, deleted, superseded_by)
    replies(id, turn_id, text, trace, created)          -- newest reply of a turn is its current one
    memory_facts(id, session_id, character, text, created, updated)        -- pinned facts (v2)
    memory_summaries(session_id, character, text, upto, created)           -- rolling summaries (v2)
    memory_vectors(session_id, embedder_id, hash, vector)                   -- the messages' vectors (v2)

Times are seconds since the epoch (UTC floats). Deleting a *session* removes its rows for real: the
user asked for the data to go.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..config import home_dir
from ..errors import SessionError
from ..options import strict
from .base import default_target
from .sql import SQLSessionStore

SESSIONS_FILE = "sessions.sqlite3"
DEFAULT_LOCK_TIMEOUT_S = 5.0  # how long a write waits for another writer before giving up
_SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    character TEXT NOT NULL,
    user_role TEXT NOT NULL,
    title TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_updated ON sessions(updated);
CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    user_role TEXT NOT NULL,
    text TEXT NOT NULL,
    created REAL NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    superseded_by INTEGER
);
-- at most one live turn per position: the guard against two writers racing for the same index
CREATE UNIQUE INDEX IF NOT EXISTS turns_live ON turns(session_id, idx) WHERE deleted = 0 AND superseded_by IS NULL;
CREATE TABLE IF NOT EXISTS replies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    turn_id INTEGER NOT NULL REFERENCES turns(id) ON DELETE CASCADE,
    text TEXT NOT NULL,
    trace TEXT,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS replies_turn ON replies(turn_id);
"""
# Each version's statements, run in order on a file written by an older chatharuhi (in one transaction).
_MIGRATIONS = {
    2: """
CREATE TABLE IF NOT EXISTS memory_facts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    character TEXT NOT NULL,
    text TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS memory_facts_session ON memory_facts(session_id);
CREATE TABLE IF NOT EXISTS memory_summaries (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    character TEXT NOT NULL,
    text TEXT NOT NULL,
    upto INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (session_id, character)
);
CREATE TABLE IF NOT EXISTS memory_vectors (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    embedder_id TEXT NOT NULL,
    hash TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (session_id, embedder_id, hash)
);
""",
}


def default_sessions_path() -> Path:
    """``$CHATHARUHI_HOME/sessions.sqlite3`` (the home folder is created on demand)."""
    return home_dir() / SESSIONS_FILE


@strict
class SQLiteSessionStore(SQLSessionStore):
    """Sessions and their turns in one SQLite file; safe to share between threads and processes."""

    kind = "file"

    _PARAM = "?"
    _LIVE = "{t}deleted = 0 AND {t}superseded_by IS NULL"  # as the turns_live index says it, so queries can use it
    _FOR_UPDATE = ""  # every write is BEGIN IMMEDIATE: writers already queue for the whole file
    _CREATION_ORDER = "rowid"
    _REFUSE_NUL = False

    def __init__(self, path: str | os.PathLike | None = None, *, timeout: float = DEFAULT_LOCK_TIMEOUT_S):
        path = path if path is not None else default_target()
        self.path = Path(path).expanduser() if path is not None else default_sessions_path()
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # autocommit mode: every write below opens its own BEGIN IMMEDIATE transaction
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise SessionError(f"{self.path}: cannot open the session database: {exc}") from None
        self._db.row_factory = sqlite3.Row
        with self._errors("open"):
            self._db.execute("PRAGMA foreign_keys = ON")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                self._setup()
            elif version > _SCHEMA_VERSION:
                raise SessionError(f"{self.path}: written by a newer chatharuhi (schema {version}); upgrade chatharuhi")
            else:
                if self._db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    self._db.execute("PRAGMA journal_mode = WAL")
                if version < _SCHEMA_VERSION:
                    self._migrate(version)
            self._db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: a committed turn survives a crash

    def _setup(self) -> None:
        mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise SessionError(f"{self.path}: cannot switch the session database to WAL mode (got {mode!r})")
        with self._writing("create the session database") as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("PRAGMA user_version = 1")
        self._migrate(1)

    def _migrate(self, found: int) -> None:
        """Bring a file of schema ``found`` up to ``_SCHEMA_VERSION`` (a concurrent opener waits, then finds it)."""
        with self._writing("upgrade the session database") as db:
            found = db.execute("PRAGMA user_version").fetchone()[0]  # read again inside the write lock
            for version in range(found + 1, _SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version].split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    # -- plumbing ----------------------------------------------------------------------------------
    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except SessionError:
            raise
        except sqlite3.Error as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                hint = "another process is writing to it; try again, or close the other program"
            elif "readonly" in text or "read-only" in text:
                hint = "the file (or its folder) is read-only; make it writable or set CHATHARUHI_HOME elsewhere"
            elif "unable to open" in text:
                hint = "check that the file and its folder exist and are readable and writable"
            elif getattr(exc, "sqlite_errorcode", None) == getattr(sqlite3, "SQLITE_FULL", 13) or "is full" in text:
                hint = (f"the disk (or your quota) under {self.path.parent} is full: free some space there, or keep "
                        "the sessions on a larger disk (CHATHARUHI_HOME or --store); the file is fine and what was "
                        "stored before is kept")
            else:
                hint = "the file may be damaged; move it aside to start a new one (nothing was deleted)"
            raise SessionError(f"{self.path}: cannot {action} ({text}): {hint}") from None

    @contextmanager
    def _writing(self, action: str) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front so concurrent writers queue instead of deadlocking."""
        with self._lock, self._errors(action):
            if self._db is None:
                raise SessionError(f"{self.path}: the session store is closed")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:  # SQLite has already rolled back after some errors (SQLITE_FULL)
                    self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error:
                if self._db.in_transaction:  # a failed COMMIT leaves it open: the next write must not find it
                    self._db.execute("ROLLBACK")
                raise

    @contextmanager
    def _reading(self, action: str) -> Iterator[sqlite3.Connection]:
        """The connection, held by this process's threads one at a time (WAL: other processes read on)."""
        with self._lock, self._errors(action):
            if self._db is None:
                raise SessionError(f"{self.path}: the session store is closed")
            yield self._db

    @property
    def where(self) -> str:
        """The database file."""
        return str(self.path)

    def _insert_turn(self, db: sqlite3.Connection, session_id: str, idx: int, user_role: str, text: str,
                     now: float) -> int:
        # lastrowid, not RETURNING: the SQLite a Python links may be older than 3.35
        cur = db.execute("INSERT INTO turns (session_id, idx, user_role, text, created) VALUES (?, ?, ?, ?, ?)",
                         (session_id, idx, user_role, text, now))
        return cur.lastrowid

    # -- lifecycle -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

