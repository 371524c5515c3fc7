"""The server's errors in OpenAI's shape: ``APIError``, the status of every library error, the message a
client may see, and the app's exception handlers.

Every error a client can cause is answered as OpenAI does, ``{"error": {"message", "type", "param",
"code"}}`` with a 4xx status; anything unexpected is a 500 with a generic message (the traceback goes to
the server log, never to the client).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BudgetError,
    CharacterNotFound,
    ChatHaruhiError,
    InputError,
    InvalidCharacter,
    MissingAPIKey,
    SessionError,
    SessionNotFound,
)

INSTALL_HINT = "pip install 'chatharuhi[web]'"  # what the server needs (FastAPI, uvicorn)
logger = logging.getLogger("chatharuhi.server")
_TYPE_TAG = re.compile(r"^(str|int|float|bool|list|dict|none|.*\[.*\])$")


class APIError(Exception):
    """An error answered to the client as-is."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_status(exc: Exception) -> tuple[int, str, str | None, str | None]:
    """(HTTP status, error type, param, code) for an exception."""
    if isinstance(exc, APIError):
        return exc.status, exc.type, exc.param, exc.code
    if isinstance(exc, CharacterNotFound):
        return 404, "invalid_request_error", "model", "model_not_found"
    if isinstance(exc, SessionNotFound):
        return 404, "invalid_request_error", "session_id", "session_not_found"
    if isinstance(exc, (InputError, BudgetError)):
        return 400, "invalid_request_error", None, None
    if isinstance(exc, InvalidCharacter):  # a broken folder: the request names a character that cannot load
        return 400, "invalid_request_error", "model", "character_invalid"
    if isinstance(exc, SessionError):
        return 503, "server_error", None, "session_store_unavailable"
    if isinstance(exc, BackendTimeout):
        return 504, "server_error", None, "upstream_timeout"
    if isinstance(exc, (BackendUnavailable, MissingAPIKey)):
        return 503, "server_error", None, "backend_unavailable"
    if isinstance(exc, BackendError):
        return 502, "server_error", None, "upstream_error"
    return 500, "server_error", None, None


_URL = re.compile(r"\bhttps?://[^\s'\"<>)]+")
_ABS_PATH = re.compile(r"(?<![\w./<])(?:[A-Za-z]:)?[/\\](?!v1/)(?:[^\s'\"/\\<>:]+[/\\])+[^\s'\"/\\<>:,;)]*")


def public_message(exc: BaseException, secrets: "list[str] | tuple[str, ...]" = ()) -> str:
    """The error's message as a client may see it: no server paths, database file or upstream address."""
    text = str(exc)
    if isinstance(exc, InvalidCharacter) and exc.path is not None:
        where = Path(str(exc.path)).name + (f" line {exc.line}" if exc.line else "")
        text = f"{where}: {exc.reason}"
    for secret in sorted((s for s in secrets if s and len(s) > 3), key=len, reverse=True):
        text = text.replace(secret, "the upstream" if _URL.match(secret) else "<server path>")
    text = _URL.sub("the upstream", text)
    text = _ABS_PATH.sub("<server path>", text)
    if text.startswith("<server path>: "):
        text = text[len("<server path>: "):]
    return text.replace(" in <server path>", "")


def _validation_error(exc: ValidationError | Any) -> APIError:
    first = exc.errors()[0]
    # a union's loc names the member type tried last ("messages.0.content.str"): leave it out
    loc = [str(p) for p in first.get("loc", ()) if p != "body" and not _TYPE_TAG.match(str(p))]
    param = ".".join(loc) or None
    if first.get("type") == "extra_forbidden":
        return APIError(400, f"Unrecognized request argument supplied: {param}", param=param)
    message = first.get("msg", "invalid value")
    if first.get("type") == "too_short" and param == "messages":
        message = "messages must not be empty: send at least one user message"
    return APIError(400, f"Invalid value for '{param}': {message}" if param else message, param=param)


def install_error_handlers(app: Any) -> None:
    """Answer every error in OpenAI's JSON shape; never a traceback."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    def respond(status: int, message: str, type: str, param: str | None = None, code: str | None = None):
        return JSONResponse(error_body(message, type, param, code), status_code=status)

    async def api_error(request, exc: APIError):
        return respond(exc.status, exc.message, exc.type, exc.param, exc.code)

    async def library_error(request, exc: ChatHaruhiError):
        status, type, param, code = error_status(exc)
        if status >= 500:
            logger.warning("%s %s: %s", request.method, request.url.path, exc)
        return respond(status, public_message(exc, getattr(request.app.state, "secrets", ())), type, param, code)

    async def validation_error(request, exc: RequestValidationError):
        err = _validation_error(exc)
        return respond(err.status, err.message, err.type, err.param, err.code)

    async def http_error(request, exc: HTTPException):
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        message = f"Unknown path {request.method} {request.url.path[:200]!r}" if exc.status_code in (404, 405) \
            else str(exc.detail)
        return respond(exc.status_code, message, kind, code=str(exc.status_code))

    async def unexpected(request, exc: Exception):
        logger.exception("unexpected error in %s %s", request.method, request.url.path)
        return respond(500, "internal server error (the server log has the details)", "server_error")

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(ChatHaruhiError, library_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
