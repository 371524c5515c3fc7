"""What keeps one client from hurting another on the server: sessions bound to their owner, commits
retried past a busy database, work stopped when its client leaves, empty replies refused.

Session ownership: ``POST /v1/sessions`` answers an ``owner_token``, an HMAC of the session id under the
server's secret (``$CHATHARUHI_SESSION_SECRET``, else a random one kept in the home folder with mode
0600, so replicas sharing the home folder or the variable agree). Reading or continuing a session needs
that token (header ``X-Chatharuhi-Session-Token`` or the body's ``session_token``): knowing an id, or
holding the server's API key, is not enough. Nothing about owners is stored in the session store.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

from ..config import ENV_SESSION_SECRET, home_dir
from ..errors import BackendResponseError, SessionError, SessionNotFound

SESSION_TOKEN_HEADER = "x-chatharuhi-session-token"
SECRET_FILE = "server-session-secret"
COMMIT_ATTEMPTS = 4  # a finished reply is saved up to this many times before the client is told it was not
COMMIT_BACKOFF_S = 0.25  # first wait between attempts; doubled each time (0.25, 0.5, 1 s)

T = TypeVar("T")
logger = logging.getLogger("chatharuhi.server")


def session_secret(explicit: str | bytes | None = None) -> bytes:
    """The key owner tokens are made with: ``explicit``, ``$CHATHARUHI_SESSION_SECRET``, else the home file."""
    given = explicit or os.environ.get(ENV_SESSION_SECRET)
    if given:
        return given.encode() if isinstance(given, str) else given
    path = home_dir() / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{SECRET_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # the first writer wins; the others read its secret
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return Path(path).read_text().strip().encode()


def owner_token(secret: bytes, session_id: str) -> str:
    """The token that proves ownership of ``session_id``."""
    return "cst_" + hmac.new(secret, f"session:{session_id}".encode(), hashlib.sha256).hexdigest()


def check_owner(secret: bytes, session_id: str, token: str | None) -> None:
    """Refuse access to a session without its owner token; a wrong token reads as an unknown session."""
    from .errors import APIError

    if not token:
        raise APIError(401, f"session {session_id[:100]!r} needs its owner token: send the 'owner_token' that "
                       "POST /v1/sessions returned as the X-Chatharuhi-Session-Token header (or session_token)",
                       param="session_token", code="session_token_required")
    if not hmac.compare_digest(token.encode(), owner_token(secret, session_id).encode()):
        raise SessionNotFound(f"unknown session {session_id[:100]!r} (or the owner token is not this session's)")


def commit_with_retry(save: Callable[[], T], attempts: int = COMMIT_ATTEMPTS,
                      backoff: float = COMMIT_BACKOFF_S) -> T:
    """Save a finished turn, retrying a busy or failing database with back-off; then a clear error."""
    for attempt in range(attempts):
        try:
            return save()
        except SessionNotFound:
            raise
        except SessionError as exc:
            if attempt == attempts - 1:
                raise SessionError(f"the reply was generated but could not be saved after {attempts} attempts "
                                   f"({exc}); nothing was stored: send the message again") from None
            logger.warning("saving a turn failed (attempt %d of %d), retrying: %s", attempt + 1, attempts, exc)
            time.sleep(backoff * (2 ** attempt))
    raise AssertionError("unreachable")


def check_reply(text: str) -> None:
    """An empty reply is the upstream failing, not a turn to store."""
    if not text.strip():
        raise BackendResponseError("the upstream returned an empty reply; nothing was saved: send the message again")


async def unless_disconnected(request: Any, work: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
    """Run ``work`` while watching the client: ``(False, None)`` if it left first (the work is cancelled)."""
    import anyio

    result: list[T] = []
    failed: list[Exception] = []
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        try:
            result.append(await work())
        except Exception as exc:  # noqa: BLE001 - re-raised below, outside the task group (no ExceptionGroup)
            failed.append(exc)
        tg.cancel_scope.cancel()
    if failed:
        raise failed[0]
    return (True, result[0]) if result else (False, None)
