"""The embedded session store: one SQLite file (WAL mode) under the chatharuhi home folder.

The semantics are the contract's (base.py): append-only turns, one transaction per completed turn,
so a crash (even ``kill -9``) mid-reply loses at most the reply that was being streamed.

    sessions(id, character, user_role, title, created, updated)
    turns(id, session_id, idx, user_role, text, created, deleted, superseded_by)
    replies(id, turn_id, text, trace, created)          -- newest reply of a turn is its current one

Times are seconds since the epoch (UTC floats). Deleting a *session* removes its rows for real: the
user asked for the data to go.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..config import home_dir
from ..errors import SessionError, SessionNotFound
from ..options import strict
from ..types import Turn
from .base import Session, SessionStore, check_edit, default_target

SESSIONS_FILE = "sessions.sqlite3"
DEFAULT_LOCK_TIMEOUT_S = 5.0  # how long a write waits for another writer before giving up
_SCHEMA_VERSION = 1

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

_LIVE = "deleted = 0 AND superseded_by IS NULL"


def default_sessions_path() -> Path:
    """``$CHATHARUHI_HOME/sessions.sqlite3`` (the home folder is created on demand)."""
    return home_dir() / SESSIONS_FILE


@strict
class SQLiteSessionStore(SessionStore):
    """Sessions and their turns in one SQLite file; safe to share between threads and processes."""

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
            elif self._db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: a committed turn survives a crash

    def _setup(self) -> None:
        mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise SessionError(f"{self.path}: cannot switch the session database to WAL mode (got {mode!r})")
        with self._write("create the session database") as db:
            for statement in _SCHEMA.split(";"):
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
            else:
                hint = "the file may be damaged; move it aside to start a new one (nothing was deleted)"
            raise SessionError(f"{self.path}: cannot {action} ({text}): {hint}") from None

    @contextmanager
    def _write(self, action: str = "write to the session database") -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front so concurrent writers queue instead of deadlocking."""
        with self._lock, self._errors(action):
            if self._db is None:
                raise SessionError(f"{self.path}: the session store is closed")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self._lock, self._errors("read the session database"):
            if self._db is None:
                raise SessionError(f"{self.path}: the session store is closed")
            return self._db.execute(sql, params).fetchall()

    @staticmethod
    def _session(row: sqlite3.Row) -> Session:
        return Session(row["id"], row["character"], row["user_role"], row["title"], row["created"], row["updated"])

    def _live_turn(self, db: sqlite3.Connection, session_id: str, index: int) -> sqlite3.Row:
        sql = f"SELECT * FROM turns WHERE session_id = ? AND {_LIVE} ORDER BY idx"
        rows = db.execute(sql, (session_id,)).fetchall()
        if not rows:
            raise SessionError(f"session {session_id!r} has no turns")
        if index < 0:
            index += len(rows)
        if not 0 <= index < len(rows):
            raise SessionError(f"session {session_id!r} has no turn {index} (it has {len(rows)})")
        return rows[index]

    def _check(self, db: sqlite3.Connection, session_id: str) -> None:
        if db.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone() is None:
            raise SessionNotFound(f"unknown session {session_id!r} in {self.path}")

    @staticmethod
    def _touch(db: sqlite3.Connection, session_id: str, now: float) -> None:
        db.execute("UPDATE sessions SET updated = ? WHERE id = ?", (now, session_id))

    # -- sessions ------------------------------------------------------------------------------------
    def create(self, character: str, user_role: str, title: str | None = None) -> Session:
        """Start an empty session."""
        now = time.time()
        session = Session(uuid.uuid4().hex, character, user_role, title, now, now)
        with self._write("create a session") as db:
            db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
                       (session.id, character, user_role, title, now, now))
        return session

    def get(self, session_id: str) -> Session:
        """The session with this id; ``SessionNotFound`` if there is none."""
        rows = self._read("SELECT * FROM sessions WHERE id = ?", (str(session_id),))
        if not rows:
            raise SessionNotFound(f"unknown session {session_id!r} in {self.path}")
        return self._session(rows[0])

    def list(self, character: str | None = None, limit: int = 100) -> list[Session]:
        """Sessions, most recently updated first, optionally of one character only."""
        if character is None:
            rows = self._read("SELECT * FROM sessions ORDER BY updated DESC, rowid DESC LIMIT ?", (limit,))
        else:
            rows = self._read("SELECT * FROM sessions WHERE character = ? ORDER BY updated DESC, rowid DESC LIMIT ?",
                              (character, limit))
        return [self._session(r) for r in rows]

    def rename(self, session_id: str, title: str) -> None:
        """Set the session's title."""
        with self._write("rename a session") as db:
            self._check(db, session_id)
            db.execute("UPDATE sessions SET title = ?, updated = ? WHERE id = ?", (title, time.time(), session_id))

    def delete(self, session_id: str) -> None:
        """Remove the session and all its turns for good."""
        with self._write("delete a session") as db:
            self._check(db, session_id)
            db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    # -- turns ---------------------------------------------------------------------------------------
    def append_turn(self, session_id: str, turn: Turn, trace: dict | None = None) -> int:
        """Add a completed turn (and its trace) in one transaction; returns its index."""
        now = time.time()
        trace_json = json.dumps(trace, ensure_ascii=False) if trace is not None else None
        with self._write("save a turn") as db:
            self._check(db, session_id)
            row = db.execute(f"SELECT COUNT(*), MAX(idx) FROM turns WHERE session_id = ? AND {_LIVE}",
                             (session_id,)).fetchone()
            index, slot = row[0], (row[1] + 1 if row[1] is not None else 0)  # a deleted turn leaves a gap in idx
            cur = db.execute("INSERT INTO turns (session_id, idx, user_role, text, created) VALUES (?, ?, ?, ?, ?)",
                             (session_id, slot, turn.user_role, turn.text, now))
            db.execute("INSERT INTO replies (turn_id, text, trace, created) VALUES (?, ?, ?, ?)",
                       (cur.lastrowid, turn.reply, trace_json, now))
            self._touch(db, session_id, now)
        return index

    def add_alternative(self, session_id: str, index: int, reply: str, trace: dict | None = None) -> None:
        """A regenerated reply for turn ``index`` (negative counts from the end): it becomes current."""
        now = time.time()
        trace_json = json.dumps(trace, ensure_ascii=False) if trace is not None else None
        with self._write("save a regenerated reply") as db:
            self._check(db, session_id)
            turn = self._live_turn(db, session_id, index)
            db.execute("INSERT INTO replies (turn_id, text, trace, created) VALUES (?, ?, ?, ?)",
                       (turn["id"], reply, trace_json, now))
            self._touch(db, session_id, now)

    def turns(self, session_id: str) -> list[Turn]:
        """The live turns with their current replies, in order."""
        self.get(session_id)
        rows = self._read(
            """SELECT t.user_role, t.text, r.text AS reply FROM turns t
                JOIN replies r ON r.id = (SELECT MAX(id) FROM replies WHERE turn_id = t.id)
                WHERE t.session_id = ? AND t.deleted = 0 AND t.superseded_by IS NULL ORDER BY t.idx""",
            (session_id,))
        return [Turn(r["user_role"], r["text"], r["reply"]) for r in rows]

    def alternatives(self, session_id: str, index: int) -> list[str]:
        """Every reply turn ``index`` has had, oldest first; the last one is current."""
        with self._lock, self._errors("read the session database"):
            self._check(self._db, session_id)
            turn = self._live_turn(self._db, session_id, index)
            rows = self._db.execute("SELECT text FROM replies WHERE turn_id = ? ORDER BY created, id",
                                    (turn["id"],)).fetchall()
        return [r["text"] for r in rows]

    def chosen(self, session_id: str, index: int) -> int:
        """The position, in ``alternatives()``, of turn ``index``'s current reply."""
        with self._lock, self._errors("read the session database"):
            self._check(self._db, session_id)
            turn = self._live_turn(self._db, session_id, index)
            rows = self._db.execute("SELECT id FROM replies WHERE turn_id = ? ORDER BY created, id",
                                    (turn["id"],)).fetchall()
        ids = [r["id"] for r in rows]
        return ids.index(max(ids))

    def select_alternative(self, session_id: str, index: int, n: int) -> str:
        """Make reply ``n`` (a position in ``alternatives()``) current for turn ``index``; returns its text.

        The newest row is the current reply, so the chosen row is written again with its original time:
        it keeps its place in the list and becomes current; no text is lost."""
        with self._write("choose a reply") as db:
            self._check(db, session_id)
            turn = self._live_turn(db, session_id, index)
            rows = db.execute("SELECT * FROM replies WHERE turn_id = ? ORDER BY created, id", (turn["id"],)).fetchall()
            if not 0 <= n < len(rows):
                raise SessionError(f"turn {index} has {len(rows)} replies; there is no reply {n}")
            row = rows[n]
            if row["id"] != max(r["id"] for r in rows):
                db.execute("DELETE FROM replies WHERE id = ?", (row["id"],))
                db.execute("INSERT INTO replies (turn_id, text, trace, created) VALUES (?, ?, ?, ?)",
                           (turn["id"], row["text"], row["trace"], row["created"]))
            self._touch(db, session_id, time.time())
        return row["text"]

    def trace(self, session_id: str, index: int) -> dict | None:
        """The stored trace of turn ``index``'s current reply (``None`` if it has none)."""
        with self._lock, self._errors("read the session database"):
            self._check(self._db, session_id)
            turn = self._live_turn(self._db, session_id, index)
            row = self._db.execute("SELECT trace FROM replies WHERE turn_id = ? ORDER BY id DESC LIMIT 1",
                                   (turn["id"],)).fetchone()
        return json.loads(row["trace"]) if row and row["trace"] else None

    def delete_turn(self, session_id: str, index: int) -> None:
        """Hide turn ``index`` (its rows stay in the file, flagged as deleted); later turns move up one."""
        with self._write("delete a turn") as db:
            self._check(db, session_id)
            turn = self._live_turn(db, session_id, index)
            db.execute("UPDATE turns SET deleted = 1 WHERE id = ?", (turn["id"],))
            self._touch(db, session_id, time.time())

    def edit_turn(self, session_id: str, index: int, *, text: str | None = None, reply: str | None = None) -> None:
        """Replace the user's text of turn ``index`` (a new row supersedes the old one, its replies carried
        over) and/or its reply (added as the newest alternative); the turns after it stay as they are."""
        check_edit(text, reply)
        now = time.time()
        with self._write("edit a turn") as db:
            self._check(db, session_id)
            turn = self._live_turn(db, session_id, index)
            turn_id = turn["id"]
            if text is not None:
                db.execute("UPDATE turns SET superseded_by = -1 WHERE id = ?", (turn_id,))  # frees the live slot
                cur = db.execute("INSERT INTO turns (session_id, idx, user_role, text, created) VALUES (?, ?, ?, ?, ?)",
                                 (session_id, turn["idx"], turn["user_role"], text.strip(), now))
                db.execute("UPDATE turns SET superseded_by = ? WHERE id = ?", (cur.lastrowid, turn_id))
                db.execute("INSERT INTO replies (turn_id, text, trace, created) SELECT ?, text, trace, created "
                           "FROM replies WHERE turn_id = ? ORDER BY id", (cur.lastrowid, turn_id))
                turn_id = cur.lastrowid
            if reply is not None:
                last = db.execute("SELECT trace FROM replies WHERE turn_id = ? ORDER BY id DESC LIMIT 1",
                                  (turn_id,)).fetchone()
                db.execute("INSERT INTO replies (turn_id, text, trace, created) VALUES (?, ?, ?, ?)",
                           (turn_id, reply.strip(), last["trace"] if last else None, now))
            self._touch(db, session_id, now)

    # -- export --------------------------------------------------------------------------------------
    def export_records(self, session_id: str) -> list[dict[str, Any]]:
        """The live turns as export records: index, user_role, text, reply, alternatives, created, trace."""
        self.get(session_id)
        with self._lock, self._errors("read the session database"):
            turns = self._db.execute(f"SELECT * FROM turns WHERE session_id = ? AND {_LIVE} ORDER BY idx",
                                     (session_id,)).fetchall()
            records = []
            for t in turns:
                replies = self._db.execute("SELECT text, trace FROM replies WHERE turn_id = ? ORDER BY id",
                                           (t["id"],)).fetchall()
                records.append({"index": t["idx"], "user_role": t["user_role"], "text": t["text"],
                                "reply": replies[-1]["text"], "alternatives": [r["text"] for r in replies],
                                "created": t["created"],
                                "trace": json.loads(replies[-1]["trace"]) if replies[-1]["trace"] else None})
        return records

    # -- lifecycle -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

