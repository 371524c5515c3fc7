"""Slow and idle clients cannot hold the server: deadlines for a request's head and body, a cap on open
connections below the open-file limit, and one log line per condition.

uvicorn closes a keep-alive connection that sits idle between requests, but not one that trickles the head
or the body of a request, so a thousand such clients held every file descriptor, real requests waited, and
at the descriptor limit the accept loop logged a traceback per attempt (200 MB of log in 30 s). The HTTP
protocol here is uvicorn's own (httptools when installed, else h11) with a watch on each connection:

- the head of a request (request line and headers) must arrive within ``head_timeout_s`` of the connection
  opening, or of its first byte on a kept-alive connection (408, then closed);
- the body within ``body_timeout_s`` of the head (the connection is closed: the app sees a disconnect);
- at most ``max_connections`` are open (``connection_cap()``: below the open-file limit); at the cap a new
  one pushes out the oldest connection still sending its head, or is answered 503 when every open
  connection has sent one;
- each of these, and the event loop's "out of file descriptors" errors, is logged once, then counted in one
  line a minute at most.

``GuardedHttpTools`` and ``GuardedH11`` are what ``serve`` hands uvicorn (``http=``); the web demo sets the
same class on Gradio's uvicorn server. The limits are this process's (``configure``): one server a process.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

from ..config import (
    SERVER_BODY_TIMEOUT_S,
    SERVER_FD_RESERVE_FRACTION,
    SERVER_HEAD_TIMEOUT_S,
    SERVER_MAX_CONNECTIONS,
)
from ..errors import InputError

CONDITION_LOG_INTERVAL_S = 60.0
logger = logging.getLogger("chatharuhi.server")

_408 = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_503 = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 45\r\n"
        b"retry-after: 1\r\nconnection: close\r\n\r\ntoo many open connections; try again shortly")


def open_file_limit() -> int | None:
    """This process's soft limit on open files (``None``: none, or none that can be read)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, ValueError, OSError):  # no such limit here (Windows)
        return None
    return None if soft == resource.RLIM_INFINITY or soft <= 0 else soft


def connection_cap(limit: int | None = None) -> int:
    """Open connections allowed: ``SERVER_MAX_CONNECTIONS``, and never more than the open-file limit less a
    reserve (the store, the upstream and model files need descriptors too)."""
    limit = open_file_limit() if limit is None else limit
    if limit is None:
        return SERVER_MAX_CONNECTIONS
    return max(1, min(SERVER_MAX_CONNECTIONS, int(limit * (1 - SERVER_FD_RESERVE_FRACTION))))


@dataclass(frozen=True)
class Limits:
    """What a client may take: seconds for a request's head and body, and open connections."""

    head_timeout_s: float = SERVER_HEAD_TIMEOUT_S
    body_timeout_s: float = SERVER_BODY_TIMEOUT_S
    max_connections: int | None = None  # None: connection_cap()

    def checked(self) -> "Limits":
        """These limits with the cap filled in; an ``InputError`` naming the option that cannot be honoured."""
        for name, value in (("--head-timeout", self.head_timeout_s), ("--body-timeout", self.body_timeout_s)):
            if not isinstance(value, (int, float)) or not 0 < value <= 3600:
                raise InputError(f"{name} must be a number of seconds above 0 and at most 3600, not {value!r}")
        cap = connection_cap()
        if self.max_connections is None:
            return Limits(self.head_timeout_s, self.body_timeout_s, cap)
        if not isinstance(self.max_connections, int) or self.max_connections < 1:
            raise InputError(f"--max-connections must be a whole number above 0, not {self.max_connections!r}")
        if self.max_connections > cap and open_file_limit() is not None:
            raise InputError(f"--max-connections {self.max_connections} is more than this process's open-file limit "
                             f"({open_file_limit()}) leaves room for (at most {cap}): raise the limit (ulimit -n) "
                             "or ask for fewer")
        return self


_LIMITS = Limits().checked()


def configure(limits: Limits) -> Limits:
    """Set this process's limits (checked); returns them as they will apply."""
    global _LIMITS
    _LIMITS = limits.checked()
    return _LIMITS


class Conditions:
    """One log line per condition: the first time it happens, then at most one a minute with a count."""

    def __init__(self, log: Callable[[str], Any] = logger.warning, interval_s: float = CONDITION_LOG_INTERVAL_S):
        self.log, self.interval_s = log, interval_s
        self._seen: dict[str, list] = {}

    def note(self, key: str, message: str) -> None:
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is None:
            self._seen[key] = [now, 0]
            self.log(f"{message} (said once; then counted once a minute at most)")
            return
        seen[1] += 1
        if now - seen[0] >= self.interval_s:
            self.log(f"{message}: {seen[1]} more times in the last {now - seen[0]:.0f} s")
            seen[0], seen[1] = now, 0


CONDITIONS = Conditions()
_OUT_OF_FILES = ("EMFILE", "ENFILE", "ENOBUFS", "ENOMEM", "Too many open files")


def _loop_errors(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """The event loop's exception handler: running out of descriptors is one condition, not a traceback per
    accept; everything else goes to the loop's default handler."""
    exc = context.get("exception")
    text = f"{context.get('message', '')} {exc!r}"
    if isinstance(exc, OSError) and exc.errno in _errnos() or any(word in text for word in _OUT_OF_FILES):
        CONDITIONS.note("out-of-files", f"out of file descriptors: connections are refused until some close "
                                        f"({context.get('message') or exc})")
        return
    loop.default_exception_handler(context)


def _errnos() -> set[int]:
    import errno

    return {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class _Open:
    """This process's open connections, and those still sending a head in the order they began."""

    def __init__(self):
        self.all: set = set()
        self.in_head: OrderedDict = OrderedDict()


_OPEN = _Open()


class _Watch:
    """The deadlines of one connection: its request head, then its body."""

    def __init__(self, protocol: Any):
        self.protocol = protocol
        self.phase = "idle"
        self.timer: asyncio.TimerHandle | None = None

    def head_started(self) -> None:
        if self.phase != "head":
            self._arm("head", _LIMITS.head_timeout_s, self._head_late)
            _OPEN.in_head[self.protocol] = None

    def head_done(self) -> None:
        if self.phase == "head":
            _OPEN.in_head.pop(self.protocol, None)
            self._arm("body", _LIMITS.body_timeout_s, self._body_late)

    def body_done(self) -> None:
        if self.phase != "idle":
            self.stop()

    def stop(self) -> None:
        _OPEN.in_head.pop(self.protocol, None)
        if self.timer is not None:
            self.timer.cancel()
        self.timer, self.phase = None, "idle"

    def _arm(self, phase: str, seconds: float, late: Callable[[], None]) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.phase = phase
        self.timer = self.protocol.loop.call_later(seconds, late)

    def _head_late(self) -> None:
        CONDITIONS.note("head-timeout", f"closed a connection that sent no complete request head within "
                                        f"{_LIMITS.head_timeout_s:g} s (a slow or stalled client)")
        self.stop()
        transport = self.protocol.transport
        if transport is not None and not transport.is_closing():
            transport.write(_408)
            transport.close()

    def _body_late(self) -> None:
        CONDITIONS.note("body-timeout", f"closed a connection whose request body did not arrive within "
                                        f"{_LIMITS.body_timeout_s:g} s of its head (a slow or stalled client)")
        self.stop()
        transport = self.protocol.transport
        if transport is not None and not transport.is_closing():
            transport.close()


def _admit(protocol: Any, transport: Any) -> bool:
    """Whether a new connection may stay: at the cap, the oldest one still sending its head makes room."""
    loop = protocol.loop
    if loop.get_exception_handler() is not _loop_errors:  # whoever runs the loop (uvicorn, Gradio): set once
        loop.set_exception_handler(_loop_errors)
    if len(_OPEN.all) < _LIMITS.max_connections:  # type: ignore[operator]
        return True
    if _OPEN.in_head:
        oldest, _ = _OPEN.in_head.popitem(last=False)
        CONDITIONS.note("cap-evict", f"{_LIMITS.max_connections} connections open (the cap): closed the oldest one "
                                     "still sending its request head to let a new one in")
        oldest._watch.stop()
        if oldest.transport is not None and not oldest.transport.is_closing():
            oldest.transport.write(_408)
            oldest.transport.close()
        return True
    CONDITIONS.note("cap-refuse", f"{_LIMITS.max_connections} connections open (the cap), all with requests in "
                                  "progress: answered a new one 503")
    transport.write(_503)
    transport.close()
    return False


def _guarded(base: type) -> type:
    """uvicorn's protocol ``base`` with a watch on each connection and the cap on their number."""

    class Guarded(base):  # type: ignore[valid-type, misc]
        def connection_made(self, transport) -> None:  # type: ignore[override]
            self.transport = transport
            self._watch = _Watch(self)
            self._admitted = _admit(self, transport)
            if not self._admitted:
                return
            _OPEN.all.add(self)
            super().connection_made(transport)
            self._watch.head_started()  # the first request's head is due from the moment the connection opens

        def connection_lost(self, exc) -> None:
            self._watch.stop()
            _OPEN.all.discard(self)
            if self._admitted:
                super().connection_lost(exc)

        def handle_websocket_upgrade(self, *args) -> None:  # the websocket protocol takes the connection over
            self._watch.stop()
            _OPEN.all.discard(self)
            super().handle_websocket_upgrade(*args)

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded


@functools.cache
def _httptools() -> type:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpTools(_guarded(HttpToolsProtocol)):  # type: ignore[misc]
        """uvicorn's httptools protocol, watched."""

        def on_message_begin(self) -> None:
            self._watch.head_started()
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._watch.head_done()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._watch.body_done()
            super().on_message_complete()

    return GuardedHttpTools


@functools.cache
def _h11() -> type:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11(_guarded(H11Protocol)):  # type: ignore[misc]
        """uvicorn's h11 protocol, watched (h11 has no callbacks: its state is read around each read)."""

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:
                self._watch.head_started()
            super().data_received(data)
            state = self.conn.their_state
            if state is h11.SEND_BODY:
                self._watch.head_done()
            elif state is not h11.IDLE:
                self._watch.head_done()
                self._watch.body_done()

    return GuardedH11


def protocol_class() -> type:
    """The watched HTTP protocol uvicorn would pick itself: httptools when installed, else h11."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return _h11()
    return _httptools()


def protocol_path() -> str:
    """``protocol_class`` as an import string, for uvicorn's worker processes."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "chatharuhi.server.connections:GuardedH11"
    return "chatharuhi.server.connections:GuardedHttpTools"


def __getattr__(name: str) -> type:  # the import strings above, resolved when uvicorn asks for them
    if name == "GuardedHttpTools":
        return _httptools()
    if name == "GuardedH11":
        return _h11()
    raise AttributeError(name)
