"""The session contract in SQL, written once for the SQLite and PostgreSQL stores.

``SQLSessionStore`` holds every operation (sessions, append-only turns, alternatives, edits, export);
a store supplies only what differs between the two databases:

    _writing(action) / _reading(action)   a connection inside one write / read transaction
    _insert_turn(conn, ...)               a new turn row, returning its id
    _PARAM                                the driver's placeholder: statements here are written with ``?``
    _LIVE                                 a live turn's condition, as the store's partial index says it
    _FOR_UPDATE                           how a writer locks the session's row
    _CREATION_ORDER                       the column that breaks ties between sessions updated at once
    _REFUSE_NUL                           whether text with U+0000 must be refused
    where                                 the database, as it may be shown in a message
"""

from __future__ import annotations

import json
import time
import uuid
from abc import abstractmethod
from contextlib import AbstractContextManager
from typing import Any

from ..errors import InputError, SessionError, SessionNotFound
from ..types import Fact, Turn
from .base import Session, SessionStore, check_edit


def _trace_json(trace: dict | None) -> str | None:
    """A turn's trace as stored (a NUL inside becomes ``\\u0000``: storable anywhere)."""
    return json.dumps(trace, ensure_ascii=False) if trace is not None else None


class SQLSessionStore(SessionStore):
    """The ``SessionStore`` operations over a SQL database with the ``sessions``/``turns``/``replies`` tables."""

    # the dialect, set by each store (see the module docstring)
    _PARAM: str
    _LIVE: str
    _FOR_UPDATE: str
    _CREATION_ORDER: str
    _REFUSE_NUL: bool

    # -- what a store supplies -----------------------------------------------------------------------
    @property
    @abstractmethod
    def where(self) -> str:
        """The database, as a message may show it (a file path, or a URL without its password)."""

    @abstractmethod
    def _writing(self, action: str) -> AbstractContextManager[Any]:
        """A connection inside one write transaction; a failure names ``action``."""

    @abstractmethod
    def _reading(self, action: str) -> AbstractContextManager[Any]:
        """A connection to read from; a failure names ``action``."""

    @abstractmethod
    def _insert_turn(self, conn: Any, session_id: str, idx: int, user_role: str, text: str, now: float) -> int:
        """Insert a turn row and return its id."""

    # -- plumbing ----------------------------------------------------------------------------------
    def _run(self, conn: Any, sql: str, params: tuple = ()) -> Any:
        return conn.execute(sql.replace("?", self._PARAM), params)

    def _live(self, table: str = "") -> str:
        """The live-turn condition, on the columns of ``table`` (an alias) when given."""
        return self._LIVE.format(t=f"{table}." if table else "")

    def _storable(self, *texts: str | None) -> None:
        # PostgreSQL text cannot hold U+0000 (SQLite can): refuse it rather than store something else
        if self._REFUSE_NUL and any(t is not None and "\x00" in t for t in texts):
            raise InputError("the text contains a NUL character (U+0000), which the session store cannot keep; "
                             "remove it")

    @staticmethod
    def _session(row: Any) -> Session:
        return Session(row["id"], row["character"], row["user_role"], row["title"], row["created"], row["updated"])

    def _check(self, conn: Any, session_id: str, *, lock: bool = False) -> None:
        """An unknown id is ``SessionNotFound``; ``lock``: writers to one session queue here."""
        sql = "SELECT 1 FROM sessions WHERE id = ?" + (self._FOR_UPDATE if lock else "")
        if self._run(conn, sql, (session_id,)).fetchone() is None:
            raise SessionNotFound(f"unknown session {session_id!r} in {self.where}")

    def _live_turn(self, conn: Any, session_id: str, index: int) -> Any:
        rows = self._run(conn, f"SELECT * FROM turns WHERE session_id = ? AND {self._live()} ORDER BY idx",
                         (session_id,)).fetchall()
        if not rows:
            raise SessionError(f"session {session_id!r} has no turns")
        if index < 0:
            index += len(rows)
        if not 0 <= index < len(rows):
            raise SessionError(f"session {session_id!r} has no turn {index} (it has {len(rows)})")
        return rows[index]

    def _touch(self, conn: Any, session_id: str, now: float) -> None:
        self._run(conn, "UPDATE sessions SET updated = ? WHERE id = ?", (now, session_id))

    def _add_reply(self, conn: Any, turn_id: int, text: str, trace: str | None, created: float) -> None:
        self._run(conn, "INSERT INTO replies (turn_id, text, trace, created) VALUES (?, ?, ?, ?)",
                  (turn_id, text, trace, created))

    def _reply_rows(self, conn: Any, turn_id: int) -> list[Any]:
        """A turn's replies in the order ``alternatives()`` lists them."""
        return self._run(conn, "SELECT * FROM replies WHERE turn_id = ? ORDER BY created, id", (turn_id,)).fetchall()

    def _last_trace(self, conn: Any, turn_id: int) -> str | None:
        row = self._run(conn, "SELECT trace FROM replies WHERE turn_id = ? ORDER BY id DESC LIMIT 1",
                        (turn_id,)).fetchone()
        return row["trace"] if row else None

    # -- sessions ------------------------------------------------------------------------------------
    def create(self, character: str, user_role: str, title: str | None = None) -> Session:
        """Start an empty session."""
        self._storable(character, user_role, title)
        now = time.time()
        session = Session(uuid.uuid4().hex, character, user_role, title, now, now)
        with self._writing("create a session") as conn:
            self._run(conn, "INSERT INTO sessions (id, character, user_role, title, created, updated) "
                      "VALUES (?, ?, ?, ?, ?, ?)", (session.id, character, user_role, title, now, now))
        return session

    def get(self, session_id: str) -> Session:
        """The session with this id; ``SessionNotFound`` if there is none."""
        with self._reading("read a session") as conn:
            row = self._run(conn, "SELECT * FROM sessions WHERE id = ?", (str(session_id),)).fetchone()
        if row is None:
            raise SessionNotFound(f"unknown session {session_id!r} in {self.where}")
        return self._session(row)

    def list(self, character: str | None = None, limit: int = 100) -> list[Session]:
        """Sessions, most recently updated first, optionally of one character only."""
        order = f"ORDER BY updated DESC, {self._CREATION_ORDER} DESC LIMIT ?"
        with self._reading("list sessions") as conn:
            if character is None:
                rows = self._run(conn, f"SELECT * FROM sessions {order}", (limit,)).fetchall()
            else:
                rows = self._run(conn, f"SELECT * FROM sessions WHERE character = ? {order}",
                                 (character, limit)).fetchall()
        return [self._session(r) for r in rows]

    def rename(self, session_id: str, title: str) -> None:
        """Set the session's title."""
        self._storable(title)
        with self._writing("rename a session") as conn:
            self._check(conn, session_id, lock=True)
            self._run(conn, "UPDATE sessions SET title = ?, updated = ? WHERE id = ?", (title, time.time(), session_id))

    def delete(self, session_id: str) -> None:
        """Remove the session and all its turns for good."""
        with self._writing("delete a session") as conn:
            self._check(conn, session_id, lock=True)
            self._run(conn, "DELETE FROM sessions WHERE id = ?", (session_id,))

    # -- turns ---------------------------------------------------------------------------------------
    def append_turn(self, session_id: str, turn: Turn, trace: dict | None = None) -> int:
        """Add a completed turn (and its trace) in one transaction; returns its index."""
        self._storable(turn.user_role, turn.text, turn.reply)
        now, trace_text = time.time(), _trace_json(trace)
        with self._writing("save a turn") as conn:
            self._check(conn, session_id, lock=True)
            row = self._run(conn, f"SELECT COUNT(*) AS n, MAX(idx) AS top FROM turns WHERE session_id = ? "
                            f"AND {self._live()}", (session_id,)).fetchone()
            index, slot = row["n"], (row["top"] + 1 if row["top"] is not None else 0)  # deletions leave gaps
            turn_id = self._insert_turn(conn, session_id, slot, turn.user_role, turn.text, now)
            self._add_reply(conn, turn_id, turn.reply, trace_text, now)
            self._touch(conn, session_id, now)
        return index

    def add_alternative(self, session_id: str, index: int, reply: str, trace: dict | None = None) -> None:
        """A regenerated reply for turn ``index`` (negative counts from the end): it becomes current."""
        self._storable(reply)
        now, trace_text = time.time(), _trace_json(trace)
        with self._writing("save a regenerated reply") as conn:
            self._check(conn, session_id, lock=True)
            turn = self._live_turn(conn, session_id, index)
            self._add_reply(conn, turn["id"], reply, trace_text, now)
            self._touch(conn, session_id, now)

    def turns(self, session_id: str) -> list[Turn]:
        """The live turns with their current replies, in order."""
        with self._reading("read a session") as conn:
            self._check(conn, session_id)
            rows = self._run(conn, f"""SELECT t.user_role, t.text, r.text AS reply FROM turns t
                JOIN replies r ON r.id = (SELECT MAX(id) FROM replies WHERE turn_id = t.id)
                WHERE t.session_id = ? AND {self._live("t")} ORDER BY t.idx""", (session_id,)).fetchall()
        return [Turn(r["user_role"], r["text"], r["reply"]) for r in rows]

    def alternatives(self, session_id: str, index: int) -> list[str]:
        """Every reply turn ``index`` has had, oldest first; the last one is current."""
        with self._reading("read a session") as conn:
            self._check(conn, session_id)
            rows = self._reply_rows(conn, self._live_turn(conn, session_id, index)["id"])
        return [r["text"] for r in rows]

    def chosen(self, session_id: str, index: int) -> int:
        """The position, in ``alternatives()``, of turn ``index``'s current reply."""
        with self._reading("read a session") as conn:
            self._check(conn, session_id)
            ids = [r["id"] for r in self._reply_rows(conn, self._live_turn(conn, session_id, index)["id"])]
        return ids.index(max(ids))

    def select_alternative(self, session_id: str, index: int, n: int) -> str:
        """Make reply ``n`` (a position in ``alternatives()``) current for turn ``index``; returns its text.

        The newest row is the current reply, so the chosen row is written again with its original time:
        it keeps its place in the list and becomes current; no text is lost."""
        with self._writing("choose a reply") as conn:
            self._check(conn, session_id, lock=True)
            turn = self._live_turn(conn, session_id, index)
            rows = self._reply_rows(conn, turn["id"])
            if not 0 <= n < len(rows):
                raise SessionError(f"turn {index} has {len(rows)} replies; there is no reply {n}")
            row = rows[n]
            if row["id"] != max(r["id"] for r in rows):
                self._run(conn, "DELETE FROM replies WHERE id = ?", (row["id"],))
                self._add_reply(conn, turn["id"], row["text"], row["trace"], row["created"])
            self._touch(conn, session_id, time.time())
        return row["text"]

    def trace(self, session_id: str, index: int) -> dict | None:
        """The stored trace of turn ``index``'s current reply (``None`` if it has none)."""
        with self._reading("read a session") as conn:
            self._check(conn, session_id)
            trace = self._last_trace(conn, self._live_turn(conn, session_id, index)["id"])
        return json.loads(trace) if trace else None

    def delete_turn(self, session_id: str, index: int) -> None:
        """Hide turn ``index`` (its rows stay stored, flagged as deleted); later turns move up one."""
        with self._writing("delete a turn") as conn:
            self._check(conn, session_id, lock=True)
            turn = self._live_turn(conn, session_id, index)
            self._run(conn, "UPDATE turns SET deleted = ? WHERE id = ?", (True, turn["id"]))
            self._touch(conn, session_id, time.time())

    def edit_turn(self, session_id: str, index: int, *, text: str | None = None, reply: str | None = None) -> None:
        """Replace the user's text of turn ``index`` (a new row supersedes the old one, its replies carried
        over) and/or its reply (added as the newest alternative); the turns after it stay as they are."""
        check_edit(text, reply)
        self._storable(text, reply)
        now = time.time()
        with self._writing("edit a turn") as conn:
            self._check(conn, session_id, lock=True)
            turn = self._live_turn(conn, session_id, index)
            turn_id = turn["id"]
            if text is not None:
                self._run(conn, "UPDATE turns SET superseded_by = -1 WHERE id = ?", (turn_id,))  # frees the live slot
                new_id = self._insert_turn(conn, session_id, turn["idx"], turn["user_role"], text.strip(), now)
                self._run(conn, "UPDATE turns SET superseded_by = ? WHERE id = ?", (new_id, turn_id))
                self._run(conn, "INSERT INTO replies (turn_id, text, trace, created) SELECT ?, text, trace, created "
                          "FROM replies WHERE turn_id = ? ORDER BY id", (new_id, turn_id))
                turn_id = new_id
            if reply is not None:
                self._add_reply(conn, turn_id, reply.strip(), self._last_trace(conn, turn_id), now)
            self._touch(conn, session_id, now)

    # -- memory ------------------------------------------------------------------------------------------
    def facts(self, session_id: str) -> list[Fact]:
        """The session's pinned facts, oldest first (``character`` "" : everyone's)."""
        with self._reading("read pinned facts") as conn:
            self._check(conn, session_id)
            rows = self._run(conn, "SELECT id, character, text FROM memory_facts WHERE session_id = ? ORDER BY id",
                             (session_id,)).fetchall()
        return [Fact(str(r["id"]), r["text"], r["character"]) for r in rows]

    def add_fact(self, session_id: str, text: str, character: str = "") -> Fact:
        """Pin a fact to the session (for one character of a group, or "" for everyone)."""
        self._storable(text, character)
        now = time.time()
        with self._writing("pin a fact") as conn:
            self._check(conn, session_id, lock=True)
            self._run(conn, "INSERT INTO memory_facts (session_id, character, text, created, updated) "
                      "VALUES (?, ?, ?, ?, ?)", (session_id, character, text, now, now))
            row = self._run(conn, "SELECT MAX(id) AS id FROM memory_facts WHERE session_id = ?",
                            (session_id,)).fetchone()
            self._touch(conn, session_id, now)
        return Fact(str(row["id"]), text, character)

    def _fact_row(self, conn: Any, session_id: str, fact_id: str) -> Any:
        row = None
        if str(fact_id).isdigit():
            row = self._run(conn, "SELECT * FROM memory_facts WHERE session_id = ? AND id = ?",
                            (session_id, int(fact_id))).fetchone()
        if row is None:
            raise SessionError(f"session {session_id!r} has no pinned fact {fact_id!r}")
        return row

    def edit_fact(self, session_id: str, fact_id: str, text: str) -> Fact:
        """Replace a pinned fact's text."""
        self._storable(text)
        now = time.time()
        with self._writing("edit a pinned fact") as conn:
            self._check(conn, session_id, lock=True)
            row = self._fact_row(conn, session_id, fact_id)
            self._run(conn, "UPDATE memory_facts SET text = ?, updated = ? WHERE id = ?", (text, now, row["id"]))
            self._touch(conn, session_id, now)
        return Fact(str(row["id"]), text, row["character"])

    def delete_fact(self, session_id: str, fact_id: str) -> None:
        """Unpin a fact."""
        with self._writing("unpin a fact") as conn:
            self._check(conn, session_id, lock=True)
            row = self._fact_row(conn, session_id, fact_id)
            self._run(conn, "DELETE FROM memory_facts WHERE id = ?", (row["id"],))
            self._touch(conn, session_id, time.time())

    def summaries(self, session_id: str) -> dict[str, tuple[str, int]]:
        """Each character's rolling summary: ``{character: (text, turns it covers)}``."""
        with self._reading("read summaries") as conn:
            self._check(conn, session_id)
            rows = self._run(conn, "SELECT character, text, upto FROM memory_summaries WHERE session_id = ?",
                             (session_id,)).fetchall()
        return {r["character"]: (r["text"], r["upto"]) for r in rows}

    def set_summary(self, session_id: str, character: str, text: str, upto: int) -> None:
        """Keep ``character``'s newest summary, covering the session's first ``upto`` turns."""
        self._storable(text, character)
        with self._writing("keep a summary") as conn:
            self._check(conn, session_id, lock=True)
            self._run(conn, "INSERT INTO memory_summaries (session_id, character, text, upto, created) "
                      "VALUES (?, ?, ?, ?, ?) ON CONFLICT (session_id, character) DO UPDATE SET text = excluded.text, "
                      "upto = excluded.upto, created = excluded.created",
                      (session_id, character, text, int(upto), time.time()))

    def memory_vectors(self, session_id: str, embedder_id: str) -> dict[str, bytes]:
        """The stored vectors of the session's messages, by the hash of the text they embed (raw float32 bytes)."""
        with self._reading("read the memory index") as conn:
            self._check(conn, session_id)
            rows = self._run(conn, "SELECT hash, vector FROM memory_vectors WHERE session_id = ? AND embedder_id = ?",
                             (session_id, embedder_id)).fetchall()
        return {r["hash"]: bytes(r["vector"]) for r in rows}

    def add_memory_vectors(self, session_id: str, embedder_id: str, vectors: dict[str, bytes]) -> None:
        """Store message vectors (one already stored is kept)."""
        if not vectors:
            return
        with self._writing("store the memory index") as conn:
            self._check(conn, session_id)
            for digest, blob in vectors.items():
                self._run(conn, "INSERT INTO memory_vectors (session_id, embedder_id, hash, vector) "
                          "VALUES (?, ?, ?, ?) ON CONFLICT (session_id, embedder_id, hash) DO NOTHING",
                          (session_id, embedder_id, digest, blob))

    def clear_memory_vectors(self, session_id: str, embedder_id: str) -> None:
        """Forget the session's message vectors for one embedder (a damaged index, before it is rebuilt)."""
        with self._writing("clear the memory index") as conn:
            self._run(conn, "DELETE FROM memory_vectors WHERE session_id = ? AND embedder_id = ?",
                      (session_id, embedder_id))

    # -- export --------------------------------------------------------------------------------------
    def export_records(self, session_id: str) -> list[dict[str, Any]]:
        """The live turns as export records: index, user_role, text, reply, alternatives, created, trace."""
        with self._reading("read a session") as conn:
            self._check(conn, session_id)
            turns = self._run(conn, f"SELECT * FROM turns WHERE session_id = ? AND {self._live()} ORDER BY idx",
                              (session_id,)).fetchall()
            replies = self._run(conn, f"""SELECT r.turn_id, r.text, r.trace FROM replies r
                JOIN turns t ON t.id = r.turn_id
                WHERE t.session_id = ? AND {self._live("t")} ORDER BY r.id""", (session_id,)).fetchall()
        by_turn: dict[int, list[Any]] = {}
        for r in replies:
            by_turn.setdefault(r["turn_id"], []).append(r)
        records = []
        for t in turns:
            rs = by_turn[t["id"]]
            records.append({"index": t["idx"], "user_role": t["user_role"], "text": t["text"],
                            "reply": rs[-1]["text"], "alternatives": [r["text"] for r in rs],
                            "created": t["created"], "trace": json.loads(rs[-1]["trace"]) if rs[-1]["trace"] else None})
        return records
