"""What a completion's response is made of, for one character or a group: the end-of-chunks marker, the user-role
header read as the client meant it, and a streaming response that stops when the client leaves."""

import logging
from urllib.parse import unquote

import anyio
from fastapi.responses import StreamingResponse

from .asgi import _disconnect_aware

USER_ROLE_HEADER = "x-chatharuhi-user-role"
END = object()  # the end of a choice's chunks
logger = logging.getLogger("chatharuhi.server")
DisconnectAwareStream = _disconnect_aware(StreamingResponse, anyio)


def header_text(value: str | None) -> str | None:
    """A header value as the client meant it: raw UTF-8 bytes or percent-encoding both work."""
    if not value:
        return None
    try:
        value = value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        pass
    return unquote(value).strip() or None
