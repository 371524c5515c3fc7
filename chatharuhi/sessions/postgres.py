"""The shared session store: PostgreSQL, for several server replicas (``--store postgresql://...``).

Same contract and semantics as the SQLite store: append-only turns, each completed turn written in
one transaction; writers to one session queue on its row lock (``SELECT ... FOR UPDATE``), so two
replicas answering the same conversation cannot both take the same turn index. A lost connection is
a ``SessionError`` (HTTP 503) for the request at hand; the pool reconnects when the server returns.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from ..config import DEFAULT_PG_CONNECT_TIMEOUT_S, DEFAULT_PG_POOL_MAX, ENV_STORE
from ..errors import InputError, SessionError, SessionNotFound
from ..types import Turn
from .base import Session, SessionStore, check_edit, default_target
from .pg_schema import Database

_LIVE = "NOT deleted AND superseded_by IS NULL"


def _no_nul(*texts: str | None) -> None:
    # PostgreSQL text cannot hold U+0000 (SQLite can): refuse it rather than store something else
    if any(t is not None and "\x00" in t for t in texts):
        raise InputError("the text contains a NUL character (U+0000), which the session store cannot keep; "
                         "remove it")


def _json(trace: dict | None) -> str | None:
    return json.dumps(trace, ensure_ascii=False) if trace is not None else None  # a NUL becomes \u0000: storable


class PostgresSessionStore(SessionStore):
    """Sessions and their turns in PostgreSQL; safe to share between threads, processes and machines."""

    def __init__(self, url: str | None = None, *, pool_size: int = DEFAULT_PG_POOL_MAX,
                 connect_timeout: float = DEFAULT_PG_CONNECT_TIMEOUT_S):
        url = url if url is not None else default_target()
        if not url:
            raise SessionError(f"no PostgreSQL URL: pass one, or set {ENV_STORE}=postgresql://user:pw@host/db")
        self.db = Database(url, pool_size=pool_size, connect_timeout=connect_timeout)
        self.url = self.db.where  # printable: the password is redacted

    # -- plumbing ----------------------------------------------------------------------------------
    @staticmethod
    def _session(row: dict) -> Session:
        return Session(row["id"], row["character"], row["user_role"], row["title"], row["created"], row["updated"])

    def _lock_session(self, conn: Any, session_id: str) -> None:
        """Take the session's row lock (writers to one session queue here); unknown ids are an error."""
        if conn.execute("SELECT 1 FROM sessions WHERE id = %s FOR UPDATE", (session_id,)).fetchone() is None:
            raise SessionNotFound(f"unknown session {session_id!r} in {self.url}")

    def _check(self, conn: Any, session_id: str) -> None:
        if conn.execute("SELECT 1 FROM sessions WHERE id = %s", (session_id,)).fetchone() is None:
            raise SessionNotFound(f"unknown session {session_id!r} in {self.url}")

    @staticmethod
    def _live_turn(conn: Any, session_id: str, index: int) -> dict:
        rows = conn.execute(f"SELECT * FROM turns WHERE session_id = %s AND {_LIVE} ORDER BY idx",
                            (session_id,)).fetchall()
        if not rows:
            raise SessionError(f"session {session_id!r} has no turns")
        if index < 0:
            index += len(rows)
        if not 0 <= index < len(rows):
            raise SessionError(f"session {session_id!r} has no turn {index} (it has {len(rows)})")
        return rows[index]

    @staticmethod
    def _touch(conn: Any, session_id: str, now: float) -> None:
        conn.execute("UPDATE sessions SET updated = %s WHERE id = %s", (now, session_id))

    # -- sessions ------------------------------------------------------------------------------------
    def create(self, character: str, user_role: str, title: str | None = None) -> Session:
        """Start an empty session."""
        _no_nul(character, user_role, title)
        now = time.time()
        session = Session(uuid.uuid4().hex, character, user_role, title, now, now)
        with self.db.transaction("create a session") as conn:
            conn.execute("INSERT INTO sessions (id, character, user_role, title, created, updated) "
                         "VALUES (%s, %s, %s, %s, %s, %s)", (session.id, character, user_role, title, now, now))
        return session

    def get(self, session_id: str) -> Session:
        """The session with this id; ``SessionNotFound`` if there is none."""
        with self.db.transaction("read a session") as conn:
            row = conn.execute("SELECT * FROM sessions WHERE id = %s", (str(session_id),)).fetchone()
        if row is None:
            raise SessionNotFound(f"unknown session {session_id!r} in {self.url}")
        return self._session(row)

    def list(self, character: str | None = None, limit: int = 100) -> list[Session]:
        """Sessions, most recently updated first, optionally of one character only."""
        with self.db.transaction("list sessions") as conn:
            if character is None:
                rows = conn.execute("SELECT * FROM sessions ORDER BY updated DESC, seq DESC LIMIT %s",
                                    (limit,)).fetchall()
            else:
                rows = conn.execute("SELECT * FROM sessions WHERE character = %s ORDER BY updated DESC, seq DESC "
                                    "LIMIT %s", (character, limit)).fetchall()
        return [self._session(r) for r in rows]

    def rename(self, session_id: str, title: str) -> None:
        """Set the session's title."""
        _no_nul(title)
        with self.db.transaction("rename a session") as conn:
            self._lock_session(conn, session_id)
            conn.execute("UPDATE sessions SET title = %s, updated = %s WHERE id = %s", (title, time.time(), session_id))

    def delete(self, session_id: str) -> None:
        """Remove the session and all its turns for good."""
        with self.db.transaction("delete a session") as conn:
            self._lock_session(conn, session_id)
            conn.execute("DELETE FROM sessions WHERE id = %s", (session_id,))

    # -- turns ---------------------------------------------------------------------------------------
    def append_turn(self, session_id: str, turn: Turn, trace: dict | None = None) -> int:
        """Add a completed turn (and its trace) in one transaction; returns its index."""
        _no_nul(turn.user_role, turn.text, turn.reply)
        now, trace_json = time.time(), _json(trace)
        with self.db.transaction("save a turn") as conn:
            self._lock_session(conn, session_id)
            row = conn.execute(f"SELECT COUNT(*) AS n, MAX(idx) AS top FROM turns WHERE session_id = %s AND {_LIVE}",
                               (session_id,)).fetchone()
            index, slot = row["n"], (row["top"] + 1 if row["top"] is not None else 0)  # deletions leave gaps
            turn_id = conn.execute("INSERT INTO turns (session_id, idx, user_role, text, created) "
                                   "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                                   (session_id, slot, turn.user_role, turn.text, now)).fetchone()["id"]
            conn.execute("INSERT INTO replies (turn_id, text, trace, created) VALUES (%s, %s, %s, %s)",
                         (turn_id, turn.reply, trace_json, now))
            self._touch(conn, session_id, now)
        return index

    def add_alternative(self, session_id: str, index: int, reply: str, trace: dict | None = None) -> None:
        """A regenerated reply for turn ``index`` (negative counts from the end): it becomes current."""
        _no_nul(reply)
        now, trace_json = time.time(), _json(trace)
        with self.db.transaction("save a regenerated reply") as conn:
            self._lock_session(conn, session_id)
            turn = self._live_turn(conn, session_id, index)
            conn.execute("INSERT INTO replies (turn_id, text, trace, created) VALUES (%s, %s, %s, %s)",
                         (turn["id"], reply, trace_json, now))
            self._touch(conn, session_id, now)

    def turns(self, session_id: str) -> list[Turn]:
        """The live turns with their current replies, in order."""
        with self.db.transaction("read a session") as conn:
            self._check(conn, session_id)
            rows = conn.execute(
                f"""SELECT t.user_role, t.text, r.text AS reply FROM turns t
                    JOIN replies r ON r.id = (SELECT MAX(id) FROM replies WHERE turn_id = t.id)
                    WHERE t.session_id = %s AND {_LIVE.replace('deleted', 't.deleted')
                                                     .replace('superseded_by', 't.superseded_by')}
                    ORDER BY t.idx""", (session_id,)).fetchall()
        return [Turn(r["user_role"], r["text"], r["reply"]) for r in rows]

    def alternatives(self, session_id: str, index: int) -> list[str]:
        """Every reply turn ``index`` has had, oldest first; the last one is current."""
        with self.db.transaction("read a session") as conn:
            self._check(conn, session_id)
            turn = self._live_turn(conn, session_id, index)
            rows = conn.execute("SELECT text FROM replies WHERE turn_id = %s ORDER BY created, id",
                                (turn["id"],)).fetchall()
        return [r["text"] for r in rows]

    def chosen(self, session_id: str, index: int) -> int:
        """The position, in ``alternatives()``, of turn ``index``'s current reply."""
        with self.db.transaction("read a session") as conn:
            self._check(conn, session_id)
            turn = self._live_turn(conn, session_id, index)
            ids = [r["id"] for r in conn.execute("SELECT id FROM replies WHERE turn_id = %s ORDER BY created, id",
                                                 (turn["id"],)).fetchall()]
        return ids.index(max(ids))

    def select_alternative(self, session_id: str, index: int, n: int) -> str:
        """Make reply ``n`` (a position in ``alternatives()``) current for turn ``index``; returns its text."""
        with self.db.transaction("choose a reply") as conn:
            self._lock_session(conn, session_id)
            turn = self._live_turn(conn, session_id, index)
            rows = conn.execute("SELECT * FROM replies WHERE turn_id = %s ORDER BY created, id",
                                (turn["id"],)).fetchall()
            if not 0 <= n < len(rows):
                raise SessionError(f"turn {index} has {len(rows)} replies; there is no reply {n}")
            row = rows[n]
            if row["id"] != max(r["id"] for r in rows):  # written again with its own time: current, same place
                conn.execute("DELETE FROM replies WHERE id = %s", (row["id"],))
                conn.execute("INSERT INTO replies (turn_id, text, trace, created) VALUES (%s, %s, %s, %s)",
                             (turn["id"], row["text"], row["trace"], row["created"]))
            self._touch(conn, session_id, time.time())
        return row["text"]

    def trace(self, session_id: str, index: int) -> dict | None:
        """The stored trace of turn ``index``'s current reply (``None`` if it has none)."""
        with self.db.transaction("read a session") as conn:
            self._check(conn, session_id)
            turn = self._live_turn(conn, session_id, index)
            row = conn.execute("SELECT trace FROM replies WHERE turn_id = %s ORDER BY id DESC LIMIT 1",
                               (turn["id"],)).fetchone()
        return json.loads(row["trace"]) if row and row["trace"] else None

    def delete_turn(self, session_id: str, index: int) -> None:
        """Hide turn ``index`` (its rows stay stored, flagged as deleted); later turns move up one."""
        with self.db.transaction("delete a turn") as conn:
            self._lock_session(conn, session_id)
            turn = self._live_turn(conn, session_id, index)
            conn.execute("UPDATE turns SET deleted = TRUE WHERE id = %s", (turn["id"],))
            self._touch(conn, session_id, time.time())

    def edit_turn(self, session_id: str, index: int, *, text: str | None = None, reply: str | None = None) -> None:
        """Replace the user's text of turn ``index`` (a new row supersedes the old, its replies carried over)
        and/or its reply (added as the newest alternative); the turns after it stay as they are."""
        check_edit(text, reply)
        _no_nul(text, reply)
        now = time.time()
        with self.db.transaction("edit a turn") as conn:
            self._lock_session(conn, session_id)
            turn = self._live_turn(conn, session_id, index)
            turn_id = turn["id"]
            if text is not None:
                conn.execute("UPDATE turns SET superseded_by = -1 WHERE id = %s", (turn_id,))  # frees the live slot
                new_id = conn.execute("INSERT INTO turns (session_id, idx, user_role, text, created) "
                                      "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                                      (session_id, turn["idx"], turn["user_role"], text.strip(), now)).fetchone()["id"]
                conn.execute("UPDATE turns SET superseded_by = %s WHERE id = %s", (new_id, turn_id))
                conn.execute("INSERT INTO replies (turn_id, text, trace, created) SELECT %s, text, trace, created "
                             "FROM replies WHERE turn_id = %s ORDER BY id", (new_id, turn_id))
                turn_id = new_id
            if reply is not None:
                last = conn.execute("SELECT trace FROM replies WHERE turn_id = %s ORDER BY id DESC LIMIT 1",
                                    (turn_id,)).fetchone()
                conn.execute("INSERT INTO replies (turn_id, text, trace, created) VALUES (%s, %s, %s, %s)",
                             (turn_id, reply.strip(), last["trace"] if last else None, now))
            self._touch(conn, session_id, now)

    def export_records(self, session_id: str) -> list[dict[str, Any]]:
        """The live turns as export records: index, user_role, text, reply, alternatives, created, trace."""
        with self.db.transaction("read a session") as conn:
            self._check(conn, session_id)
            turns = conn.execute(f"SELECT * FROM turns WHERE session_id = %s AND {_LIVE} ORDER BY idx",
                                 (session_id,)).fetchall()
            replies = conn.execute(
                f"""SELECT r.turn_id, r.text, r.trace FROM replies r JOIN turns t ON t.id = r.turn_id
                    WHERE t.session_id = %s AND {_LIVE.replace('deleted', 't.deleted')
                                                     .replace('superseded_by', 't.superseded_by')}
                    ORDER BY r.id""", (session_id,)).fetchall()
        by_turn: dict[int, list[dict]] = {}
        for r in replies:
            by_turn.setdefault(r["turn_id"], []).append(r)
        records = []
        for t in turns:
            rs = by_turn[t["id"]]
            records.append({"index": t["idx"], "user_role": t["user_role"], "text": t["text"],
                            "reply": rs[-1]["text"], "alternatives": [r["text"] for r in rs],
                            "created": t["created"], "trace": json.loads(rs[-1]["trace"]) if rs[-1]["trace"] else None})
        return records

    def shared_secret(self) -> bytes:
        """The server's session owner-token key, made once and kept here, so every replica accepts every token."""
        import secrets

        with self.db.transaction("read the session secret") as conn:
            conn.execute("INSERT INTO settings (name, value) VALUES ('session_secret', %s) ON CONFLICT DO NOTHING",
                         (secrets.token_hex(32),))
            row = conn.execute("SELECT value FROM settings WHERE name = 'session_secret'").fetchone()
        return row["value"].encode()

    @property
    def vector_cache(self) -> Any:
        """Scene vectors in this database (``ChatHaruhi(vector_cache=...)``): replicas share one embedding."""
        from .pg_vectors import PostgresVectorCache

        return PostgresVectorCache(self.db)

    # -- lifecycle -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection pool (idempotent)."""
        self.db.close()

    def __repr__(self) -> str:
        return f"PostgresSessionStore({self.url!r})"
