"""The shared session store: PostgreSQL, for several server replicas (``--store postgresql://...``).

Same contract and semantics as the SQLite store, and the same operations (sql.py): append-only turns,
each completed turn written in one transaction; writers to one session queue on its row lock
(``SELECT ... FOR UPDATE``), so two replicas answering the same conversation cannot both take the same
turn index. A lost connection is a ``SessionError`` (HTTP 503) for the request at hand; the pool
reconnects when the server returns.
"""

from __future__ import annotations

from typing import Any

from ..config import DEFAULT_PG_CONNECT_TIMEOUT_S, DEFAULT_PG_POOL_MAX, ENV_STORE
from ..errors import SessionError
from .base import default_target
from .pg_schema import Database
from .sql import SQLSessionStore


class PostgresSessionStore(SQLSessionStore):
    """Sessions and their turns in PostgreSQL; safe to share between threads, processes and machines."""

    kind = "postgresql"

    _PARAM = "%s"
    _LIVE = "NOT {t}deleted AND {t}superseded_by IS NULL"  # as the turns_live index says it
    _FOR_UPDATE = " FOR UPDATE"  # writers to one session queue on its row
    _CREATION_ORDER = "seq"
    _REFUSE_NUL = True  # PostgreSQL text cannot hold U+0000

    def __init__(self, url: str | None = None, *, pool_size: int = DEFAULT_PG_POOL_MAX,
                 connect_timeout: float = DEFAULT_PG_CONNECT_TIMEOUT_S):
        url = url if url is not None else default_target()
        if not url:
            raise SessionError(f"no PostgreSQL URL: pass one, or set {ENV_STORE}=postgresql://user:pw@host/db")
        self.db = Database(url, pool_size=pool_size, connect_timeout=connect_timeout)
        self.url = self.db.where  # printable: the password is redacted

    # -- plumbing ----------------------------------------------------------------------------------
    @property
    def where(self) -> str:
        """The URL, its password redacted."""
        return self.url

    def _writing(self, action: str) -> Any:
        return self.db.transaction(action)

    def _reading(self, action: str) -> Any:
        return self.db.transaction(action)

    def _insert_turn(self, conn: Any, session_id: str, idx: int, user_role: str, text: str, now: float) -> int:
        return conn.execute("INSERT INTO turns (session_id, idx, user_role, text, created) "
                            "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                            (session_id, idx, user_role, text, now)).fetchone()["id"]

    # -- what only PostgreSQL keeps ------------------------------------------------------------------
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
