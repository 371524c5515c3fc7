"""Persistent conversations: the ``SessionStore`` contract and its implementations.

    base.py     the contract (Session, SessionStore, export) and ``SessionStore(target)`` dispatch
    sqlite.py   the embedded default: one SQLite file (WAL) in the chatharuhi home
"""

from .base import SESSION_FORMAT, Session, SessionStore, open_session
from .sqlite import DEFAULT_LOCK_TIMEOUT_S, SESSIONS_FILE, SQLiteSessionStore, default_sessions_path

__all__ = [
    "DEFAULT_LOCK_TIMEOUT_S",
    "SESSIONS_FILE",
    "SESSION_FORMAT",
    "SQLiteSessionStore",
    "Session",
    "SessionStore",
    "default_sessions_path",
    "open_session",
]
