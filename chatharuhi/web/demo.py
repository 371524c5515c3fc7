"""Serving the web demo: the Gradio app built around a ``WebDemo`` (app.py) and its layout (layout.py), the browser
token's key, the rule about serving off loopback, and ``launch``."""

from __future__ import annotations

import os
import secrets
import sys
import threading
from typing import TYPE_CHECKING, Any

from ..config import ENV_DEMO_PASSWORD, home_dir
from ..errors import BackendUnavailable, InputError
from .app import WebDemo
from .state import DEFAULT_HOST, DEFAULT_PORT, SECRET_FILE, WEB_INSTALL

if TYPE_CHECKING:
    import gradio

    from ..server.connections import Limits
    from ..sessions import SessionStore

__all__ = ["build_app", "check_exposure", "import_gradio", "launch", "web_secret"]


def web_secret() -> str:
    """The key that encrypts each browser's token in its localStorage, kept in the home folder.

    Not what protects chats (Gradio hands it to the page): the token itself is random per browser,
    and the server checks it against its own table of owners (``sessions/owners.py``)."""
    path = home_dir() / SECRET_FILE
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(value)
    return value


def import_gradio():
    """Import Gradio with analytics (and its version check) off; a missing install says what to run."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError:
        raise BackendUnavailable(f"the web demo needs Gradio: {WEB_INSTALL}") from None
    return gradio


def build_app(backend: Any = None, characters_dir: Any = None, sessions: "SessionStore | None" = None,
              embedder: Any = None, shared_imports: bool = False, **llm_options: Any) -> "gradio.Blocks":
    """The demo's Gradio Blocks (not launched); ``app.demo`` is its ``WebDemo``. ``shared_imports``: characters
    a visitor adds are listed for everyone (default: for that browser only)."""
    from .layout import layout

    gr = import_gradio()
    demo = WebDemo(backend, characters_dir, sessions, embedder, shared_imports=shared_imports, **llm_options)
    app = layout(gr, demo, secret=web_secret())
    app.demo = demo
    return app


def check_exposure(host: str, password: str | None, open_access: bool) -> None:
    """Off loopback, refuse to serve without a password unless told to on purpose (and then warn)."""
    from ..server.run import is_loopback

    if is_loopback(host) or password:
        return
    if not open_access:
        raise InputError(f"refusing to serve the demo on {host} without a password: anyone who can reach this "
                         "machine could chat on your backend and read the chats. Pass --password PASSWORD (or set "
                         f"{ENV_DEMO_PASSWORD}), or --no-auth to serve it open on purpose (or bind to 127.0.0.1)")
    print(f"WARNING: the chatharuhi demo is served on {host} with NO password (--no-auth): anyone who can reach "
          "this machine can use it", file=sys.stderr)


def launch(app: "gradio.Blocks", host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, block: bool = True,
           warm: bool = True, password: str | None = None, open_access: bool = False,
           banner: str | None = None, limits: "Limits | None" = None) -> None:
    """Serve the app on ``host:port``: never shared through Gradio's tunnel, no browser opened; with
    ``warm``, the characters' indexes are built in the background meanwhile.

    Off loopback it needs ``password`` (a login page; any user name) or ``open_access=True`` (said out loud).
    ``banner`` is the one line printed to stderr (default: the address); Gradio's own start-up lines are kept
    quiet, since one of them suggests ``share=True``, a public tunnel to this machine.

    Slow clients: Gradio builds its uvicorn server itself and takes no protocol, so once it is up the server is
    given the watched protocol of ``server.connections`` (deadlines for a request's head and body, a cap on
    connections below the open-file limit, one log line per condition); ``limits`` defaults to the server's,
    with ``DEMO_BODY_TIMEOUT_S`` for bodies (uploads of up to 50 MB). A connection that opens in the moment
    between Gradio's start and that hand-over is served unwatched."""
    from ..config import DEMO_BODY_TIMEOUT_S
    from ..server.connections import Limits, configure, protocol_class
    from .layout import CSS, login_check

    check_exposure(host, password, open_access)
    configure(limits or Limits(body_timeout_s=DEMO_BODY_TIMEOUT_S))
    if warm and getattr(app, "demo", None) is not None:
        threading.Thread(target=app.demo.warm, name="chatharuhi-demo-warm", daemon=True).start()
    print(banner or f"chatharuhi demo on http://{host}:{port}", file=sys.stderr, flush=True)
    app.launch(server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=True,
               ssr_mode=False, show_error=True, footer_links=[], css=CSS, quiet=True,
               auth=login_check(password) if password else None)
    app.server.config.http_protocol_class = protocol_class()  # uvicorn reads it for each new connection
    if block:
        app.block_thread()
