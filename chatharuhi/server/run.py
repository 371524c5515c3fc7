"""Running the server in this process: ``serve`` refuses a non-loopback address without an API key, runs
uvicorn with the watched HTTP protocol of ``server.connections`` (slow clients), or hands over to
``server.workers`` for ``--workers N``, and bounds the shutdown.

The app itself is built by ``server.create_app``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from ..errors import BackendUnavailable, InputError
from .errors import INSTALL_HINT

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
ENV_API_KEY = "CHATHARUHI_API_KEY"
SHUTDOWN_GRACE_S = 2.0  # on SIGTERM/Ctrl-C, open requests get this long to finish...
SHUTDOWN_DEADLINE_S = 4.0  # ...and the process exits by this time whatever is still running

logger = logging.getLogger("chatharuhi.server")

if TYPE_CHECKING:
    from .connections import Limits


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    api_key: str | None = None,
    log_level: str = "info",
    workers: int = 1,
    limits: "Limits | None" = None,
    **app_options: Any,
) -> None:
    """Run the server with uvicorn (``workers`` processes); refuses a non-loopback address without an API key.
    ``limits``: what a slow client may hold (``server.connections``; default: the named defaults)."""
    api_key = api_key or os.environ.get(ENV_API_KEY) or None
    if not is_loopback(host) and not api_key:
        raise InputError(f"refusing to listen on {host} without an API key: anyone who can reach it could use "
                         f"your backend. Pass --api-key KEY or set {ENV_API_KEY} (or bind to 127.0.0.1)")
    try:
        import uvicorn
    except ImportError:
        raise BackendUnavailable(f"the server needs uvicorn: {INSTALL_HINT}") from None
    from .connections import Limits, configure, protocol_class

    limits = configure(limits or Limits())  # refused now, before anything starts, if it cannot be honoured
    if workers != 1:
        from .workers import serve_workers

        return serve_workers(workers, host=host, port=port, log_level=log_level, api_key=api_key, limits=limits,
                             **app_options)
    from .app import create_app

    app = create_app(api_key=api_key, **app_options)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, server_header=False,
                                           timeout_graceful_shutdown=SHUTDOWN_GRACE_S, http=protocol_class()))
    graceful = server.handle_exit

    def handle_exit(sig, frame) -> None:  # uvicorn stops accepting and drains; a watchdog bounds the wait
        graceful(sig, frame)
        watchdog = threading.Timer(SHUTDOWN_DEADLINE_S, _exit_now)
        watchdog.daemon = True
        watchdog.start()

    server.handle_exit = handle_exit
    server.run()


def _exit_now() -> None:
    """End the process: blocking work still running in threads (an embedding, a hung upstream) would
    otherwise hold it up for as long as it runs. Saved turns are safe: each is one committed transaction."""
    logger.warning("shutdown took over %s s: exiting without waiting for the requests still running",
                   SHUTDOWN_DEADLINE_S)
    logging.shutdown()
    os._exit(0)
