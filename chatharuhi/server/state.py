"""What one server app holds: the bots, the session store, the owner-token secret, the thread limiter.

The route handlers (routes.py, completions.py) are module-level functions that read this from
``request.app.state.server``; ``create_app`` (app.py) builds it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..sessions.pg_schema import is_postgres_url
from . import guard
from .pool import BotPool

T = TypeVar("T")
WORKER_THREADS = 256  # blocking backend streams run in threads: one per open stream, up to this many


def open_shared_store(target: Any) -> Any:
    """The PostgreSQL store for a ``postgresql://`` target (None: ``$CHATHARUHI_STORE``), opened and migrated
    now; None for a SQLite file."""
    from ..sessions.base import default_target

    target = default_target() if target is None else target
    if not is_postgres_url(os.fspath(target) if isinstance(target, os.PathLike) else target):
        return None  # SQLite: opened on first use, as before
    from ..sessions import SessionStore

    return SessionStore(target)


class ServerState:
    """The server's shared parts, each opened on first use; safe to use from every request."""

    def __init__(self, pool: BotPool, *, sessions: Any, sessions_path: Any, session_secret: str | None,
                 upstream: str):
        import anyio

        self.pool, self.upstream = pool, upstream
        self._store, self._sessions_path = sessions, sessions_path
        self._explicit_secret, self._secret = session_secret, None
        self.limiter = anyio.CapacityLimiter(WORKER_THREADS)
        self.secrets = _secrets(pool, sessions, sessions_path)  # never shown in an error body

    def store(self) -> Any:
        """The session store (a SQLite file is opened on first use)."""
        if self._store is None:
            from ..sessions import SessionStore

            self._store = SessionStore(self._sessions_path)
        return self._store

    def secret(self) -> bytes:
        """The key of the sessions' owner tokens: given, ``$CHATHARUHI_SESSION_SECRET``, or the store's shared one."""
        if self._secret is None:
            explicit = self._explicit_secret or os.environ.get(guard.ENV_SESSION_SECRET)
            shared = getattr(self.store(), "shared_secret", None)  # PostgreSQL: one secret for every replica
            self._secret = shared() if shared is not None and not explicit else guard.session_secret(explicit)
        return self._secret

    def check_owner(self, session_id: str, token: str | None) -> None:
        """Refuse a caller without the session's owner token (``APIError`` 403/404)."""
        guard.check_owner(self.secret(), session_id, token)

    def owner_token(self, session_id: str) -> str:
        """The owner token of a session (only its creator is given it)."""
        return guard.owner_token(self.secret(), session_id)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` on a worker thread (blocking work: retrieval, the store, a blocking backend stream)."""
        import anyio

        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self.limiter)


def _secrets(pool: BotPool, sessions: Any, sessions_path: Any) -> list[str]:
    """Strings an error body must not reveal: the upstream address, the session database, character folders."""
    from ..character.discovery import search_dirs
    from ..sessions import default_sessions_path

    backend = pool.backend
    found = [str(backend.base_url or "")]
    db = getattr(sessions, "path", None) or sessions_path or default_sessions_path()
    found += [str(db), str(Path(str(db)).parent)]
    for d in search_dirs(pool.characters_dir):
        found += [str(d), str(d.resolve()) if d.exists() else ""]
    return [s for s in found if s]
