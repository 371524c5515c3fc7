"""The server's ASGI wrappers: a request id on every response, bearer-key auth, and a stream that stops
when its client leaves. Plain ASGI, not Starlette middleware (BaseHTTPMiddleware re-streamed every body)."""

from __future__ import annotations

import hmac
import uuid

from .errors import error_body

REQUEST_ID_HEADER = "x-request-id"  # echoed when the client sends a sane one, else ours


class _RequestId:
    """Put an ``x-request-id`` on every response: the client's own when it sent a sane one, else a new id."""

    _SANE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        ident = given if 0 < len(given) <= 128 and set(given) <= self._SANE else f"req_{uuid.uuid4().hex}"

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER.encode(), ident.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


class _BearerAuth:
    """Require ``Authorization: Bearer <key>`` on every ``/v1`` request."""

    def __init__(self, app, api_key: str):
        self.app, self.key = app, api_key.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1"):
            given = dict(scope["headers"]).get(b"authorization", b"")
            token = given[7:] if given[:7].lower() == b"bearer " else b""
            if not hmac.compare_digest(token, self.key):
                from fastapi.responses import JSONResponse

                msg = "Incorrect or missing API key: send 'Authorization: Bearer <key>' (the server's --api-key)"
                body = error_body(msg, "invalid_request_error", code="invalid_api_key")
                await JSONResponse(body, status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _disconnect_aware(StreamingResponse, anyio):
    """A streaming response that stops its body as soon as the client disconnects (not at the next send)."""

    class DisconnectAwareStream(StreamingResponse):
        async def __call__(self, scope, receive, send) -> None:
            async with anyio.create_task_group() as tg:

                async def stream() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:  # the client went away while we were sending
                        pass
                    finally:
                        with anyio.CancelScope(shield=True):
                            await self.body_iterator.aclose()
                    tg.cancel_scope.cancel()

                tg.start_soon(stream)
                await self.listen_for_disconnect(receive)
                tg.cancel_scope.cancel()

    return DisconnectAwareStream
