"""Persistent conversations: the ``SessionStore`` contract and its implementations.

    base.py        the contract (Session, SessionStore, export) and ``SessionStore(target)`` dispatch
    sql.py         the operations of both stores, written once over a small SQL dialect
    sqlite.py      the embedded default: one SQLite file (WAL) in the chatharuhi home
    postgres.py    the shared store for server replicas (``postgresql://...``; the [postgres] extra)
    pg_schema.py   its connection pool, typed errors and versioned migrations
    pg_vectors.py  scene vectors in the same database (the index's ``VectorCache``)
"""

from .base import SESSION_FORMAT, Session, SessionStore, open_session
from .postgres import PostgresSessionStore  # psycopg itself is imported only when one is opened
from .sqlite import DEFAULT_LOCK_TIMEOUT_S, SESSIONS_FILE, SQLiteSessionStore, default_sessions_path

__all__ = [
    "DEFAULT_LOCK_TIMEOUT_S",
    "PostgresSessionStore",
    "SESSIONS_FILE",
    "SESSION_FORMAT",
    "SQLiteSessionStore",
    "Session",
    "SessionStore",
    "default_sessions_path",
    "open_session",
]
