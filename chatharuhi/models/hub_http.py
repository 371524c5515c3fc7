"""Every byte ``models pull`` reads from a hub is bounded, huggingface_hub's own reads included.

A mirror can answer with a body that never ends: as the file (filling the disk before the hash check), or
as an error page that huggingface_hub reads whole into memory to quote it (a process grew to 20.8 GB). The
requests a pull makes carry a read limit (``limited``): its bytes for a file (what is left of the pinned
size), ``ERROR_BODY_MAX_BYTES`` for an error answer or a metadata answer. The transport below enforces
it on huggingface_hub's shared client, whichever code of theirs reads the response, and the answer that
passes its limit ends in a ``MirrorMisbehaves`` saying so. Requests without the header are left alone.
"""

from __future__ import annotations

from typing import Any, Iterator

from ..errors import ModelDownloadError

READ_LIMIT_HEADER = "x-chatharuhi-read-limit"  # taken off the request before it is sent
ERROR_BODY_MAX_BYTES = 64 << 10  # an error page or a metadata answer is never longer than this


class MirrorMisbehaves(ModelDownloadError):
    """The hub or mirror sent more than it said it would: the pull stopped reading."""


def limited(headers: dict[str, str], limit: int) -> dict[str, str]:
    """``headers`` with the read limit for one answer."""
    return {**headers, READ_LIMIT_HEADER: str(max(int(limit), 0))}


def _transport_class() -> type:
    import httpx2

    class LimitedStream(httpx2.SyncByteStream):
        """A response body that stops with ``MirrorMisbehaves`` past its limit."""

        def __init__(self, stream: Any, limit: int, where: str, status: int):
            self.stream, self.limit, self.where, self.status = stream, limit, where, status

        def __iter__(self) -> Iterator[bytes]:
            seen = 0
            for block in self.stream:
                seen += len(block)
                if seen > self.limit:
                    what = f"an error answer (HTTP {self.status})" if self.status >= 400 else "the file"
                    raise MirrorMisbehaves(f"{self.where} sent more than {self.limit:,} bytes for {what}, more than it "
                                           "may: the mirror misbehaves. Nothing past that was read or kept; try again "
                                           "later, or set HF_ENDPOINT to another mirror")
                yield block

        def close(self) -> None:
            self.stream.close()

    class LimitedTransport(httpx2.BaseTransport):
        """huggingface_hub's own transport, with the read limit of each marked request enforced."""

        def __init__(self, inner: Any):
            self.inner = inner

        def handle_request(self, request: Any) -> Any:
            raw = request.headers.get(READ_LIMIT_HEADER)
            if raw is None:
                return self.inner.handle_request(request)
            del request.headers[READ_LIMIT_HEADER]
            response = self.inner.handle_request(request)
            limit = int(raw) if response.status_code < 300 and request.method != "HEAD" else ERROR_BODY_MAX_BYTES
            response.stream = LimitedStream(response.stream, limit, f"{request.url.scheme}://{request.url.host}"
                                             f"{':' + str(request.url.port) if request.url.port else ''}",
                                             response.status_code)
            return response

        def close(self) -> None:
            self.inner.close()

    return LimitedTransport


_INSTALLED: list[Any] = []


def install(hub: Any) -> None:
    """Give huggingface_hub's shared client the limiting transport (once per process)."""
    if _INSTALLED:
        return
    from huggingface_hub.utils import _http

    previous = _http._GLOBAL_CLIENT_FACTORY  # the user's own factory, if they set one
    transport = _transport_class()

    def factory() -> Any:
        client = previous()
        client._transport = transport(client._transport)  # httpx keeps its default transport here
        return client

    hub.set_client_factory(factory)
    _INSTALLED.append(factory)
