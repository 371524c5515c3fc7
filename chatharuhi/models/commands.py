"""``chatharuhi models list | pull NAME | rm NAME``: the command-line side of ``chatharuhi.models``."""

from __future__ import annotations

import argparse
import sys


def add_parsers(sub) -> None:
    """Add the ``models`` command and its list, pull and rm sub-commands."""
    p = sub.add_parser("models", help="local GGUF models and LoRA adapters: list the catalogue, pull one by name, "
                                      "remove one")
    verbs = p.add_subparsers(dest="models_command", required=True)
    verbs.add_parser("list", help="the model table: size, licence, languages, adapters' bases, and what is pulled")
    q = verbs.add_parser("pull", help="download a model or adapter (resumable, sha256-checked) into the chatharuhi "
                                      "home")
    q.add_argument("name", help="a name from `chatharuhi models list`, e.g. qwen2.5-3b")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q = verbs.add_parser("rm", help="delete a pulled model (and any partial download of it)")
    q.add_argument("name")


def cmd_models(args: argparse.Namespace) -> int:
    """Dispatch ``models list|pull|rm``."""
    return {"list": _list, "pull": _pull, "rm": _rm}[args.models_command](args)


def _list(args: argparse.Namespace) -> int:
    from .catalog import catalog
    from .selection import default_pulled
    from .store import format_size, installed, model_dir, partial_bytes

    default = default_pulled()
    rows = [("NAME", "SIZE", "LICENCE", "LANGUAGES", "STATUS", "MODEL (REPO)")]
    entries = sorted(catalog().values(), key=lambda e: e.is_adapter)  # models first, then adapters
    for e in entries:
        if e.builtin:
            from .embedded import embedded_model_path

            found = embedded_model_path()
            status = "built in" if found is not None else "not installed"
            if found is not None and default is None:
                status += " (default)"
            source = f"{e.title} ({e.notes})"
            size = format_size(found.stat().st_size) if found is not None else "?"
        else:
            got = partial_bytes(e.name)
            status = ("pulled" if installed(e) else f"partial {100 * got // (e.size or got or 1)}%" if got
                      else "-")
            if default is not None and default.name == e.name:
                status += " (default)"
            pin = "" if e.pinned else ", sha256 from the hub"
            source = f"{e.title} ({e.repo}{pin})"
            if e.is_adapter:
                source = f"LoRA adapter for {e.base}: {source}"
            size = format_size(e.size)
        langs = ",".join(e.languages[:3]) + ("+" if len(e.languages) > 3 else "") or "-"
        rows.append((e.name, size, e.licence, langs, status, source))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5])
    print(f"\nmodels are kept in {model_dir('')}; use one with --model NAME (chat, ask, demo, serve) or "
          "ChatHaruhi(..., llm='llama_cpp', model=NAME); an adapter with [adapter] name = NAME in a character's "
          "character.toml", file=sys.stderr)
    return 0


def _pull(args: argparse.Namespace) -> int:
    from .download import pull_model

    try:
        path = pull_model(args.name, progress=not args.quiet)
    except KeyboardInterrupt:  # the bytes so far are kept in .partial/
        from .catalog import find_model
        from .store import format_size, partial_bytes

        entry = find_model(args.name)
        print(f"\npull of {entry.name} stopped at {format_size(partial_bytes(entry.name))} of "
              f"{format_size(entry.size)}; run `chatharuhi models pull {entry.name}` again to resume", file=sys.stderr)
        return 130
    print(path)
    return 0


def _rm(args: argparse.Namespace) -> int:
    from .store import remove

    gone = remove(args.name)
    print(f"removed {', '.join(str(p) for p in gone)}" if gone else f"{args.name} was not pulled; nothing removed")
    return 0


COMMANDS = {"models": cmd_models}
