"""Import and export characters in other tools' formats.

    import_character(path, to=None)        folder, packaged role JSONL, 54K rows, zip, card JSON/PNG/CHARX
    export_character(character, fmt, out)  v2 | v3 (JSON, or PNG with png=True) | charx | jsonl | zip

Imports are written into a temporary folder, loaded back, then moved into place: a failed import
leaves nothing behind.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import IMAGE_MAX_PIXELS
from ..errors import CharacterImportError

if TYPE_CHECKING:
    from ..character.folder import Character
    from .folder import CharacterDraft

EXPORT_FORMATS = ("v2", "v3", "charx", "jsonl", "zip")

__all__ = ["EXPORT_FORMATS", "export_character", "import_character", "read_draft"]


def _folder_draft(folder: Path, name: str | None) -> "CharacterDraft":
    from ..character.folder import inside_folder, load_character
    from ..config import SYSTEM_PROMPT_FILE
    from .folder import CharacterDraft

    character = load_character(folder)  # a broken folder fails here, before anything is written
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
             if p.is_file() and not p.is_symlink() and inside_folder(folder, p)  # never copy what a link points at
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)}
    prompt = files.pop(SYSTEM_PROMPT_FILE, b"").decode("utf-8-sig") or character.system_prompt  # written as such
    return CharacterDraft(name or folder.name, prompt, [], files=files, source=str(folder))


def read_draft(path: str | os.PathLike, *, name: str | None = None, role: str | None = None) -> "CharacterDraft":
    """Read any supported file or folder into a draft (nothing is written)."""
    from . import cards, haruhi_formats
    from .safezip import SafeZip

    p = Path(path).expanduser()
    if p.is_dir():
        return _folder_draft(p, name)
    if not p.is_file():
        raise CharacterImportError("no such file or folder", p)
    with p.open("rb") as f:
        head = f.read(8)
    suffix = p.suffix.lower()
    if head == cards.PNG_SIGNATURE or suffix == ".png":
        card, raw = cards.read_png_card(p)
        width, height = cards.png_size(p)
        if width * height > IMAGE_MAX_PIXELS:  # the card is read; a picture this large is no avatar
            warnings.warn(f"{p.name}: the card's picture is {width}×{height} pixels, over the limit of "
                          f"{IMAGE_MAX_PIXELS // 1_000_000} megapixels: imported without an avatar", RuntimeWarning,
                          stacklevel=3)
            return cards.card_to_draft(card, p, name=name, raw=raw)
        return cards.card_to_draft(card, p, name=name, raw=raw, files={cards.AVATAR_FILE: p.read_bytes()})
    if head[:2] == b"PK" or suffix in (".zip", ".charx"):
        with SafeZip(p) as z:
            if cards.CARD_FILE in z.names:
                return cards.read_charx(z, name)
            if haruhi_formats.is_chroma_role_zip(z):
                return haruhi_formats.read_chroma_role_zip(z, name)
            root = haruhi_formats.folder_root(z)
            if root is not None:
                return haruhi_formats.read_folder_zip(z, root, name)
            raise CharacterImportError("the zip holds no card.json, ChatHaruhi role (content/system_prompt.txt + "
                                       "chroma.sqlite3) or character folder (system_prompt.txt + texts/)", p)
    if suffix == ".json" and p.read_bytes().lstrip()[:1] == b"{":
        raw = p.read_bytes()
        return cards.card_to_draft(cards.parse_card_json(raw, p), p, name=name, raw=raw)
    if suffix in (".jsonl", ".json"):
        return haruhi_formats.read_role_jsonl(p, name=name, role=role)
    raise CharacterImportError("unknown format: expected a folder, .jsonl, .json or .png card, .charx or .zip", p)


def import_character(path: str | os.PathLike, to: str | os.PathLike | None = None, *, name: str | None = None,
                     role: str | None = None, overwrite: bool = False) -> Path:
    """Import ``path`` as a character folder in ``to`` (default: the user's characters folder)."""
    from ..character.discovery import user_characters_dir
    from .folder import write_draft

    try:
        draft = read_draft(path, name=name, role=role)
    except RecursionError:  # any reader: a file nested deeper than Python recurses is no character
        raise CharacterImportError("the file is nested too deeply to be a character", path) from None
    return write_draft(draft, to if to is not None else user_characters_dir(), overwrite=overwrite)


def export_character(character: "Character | str | os.PathLike", fmt: str, out: str | os.PathLike, *,
                     png: bool = False, characters_dir: Any = None, embedder: Any = None) -> Path:
    """Write a character (a ``Character``, a name, or a folder) as a card, role JSONL or zip."""
    from ..character.folder import Character, load_character
    from . import card_export, haruhi_formats
    from .haruhi_formats import _atomic_write

    if not isinstance(character, Character):
        if isinstance(character, os.PathLike) or Path(str(character)).is_dir():
            character = load_character(character)
        else:
            from ..character.discovery import find_character

            character = find_character(str(character), characters_dir)
    fmt = fmt.lower()
    if fmt in ("v2", "v3"):
        data = card_export.card_png_bytes(character, fmt) if png else card_export.card_json_bytes(
            card_export.character_to_card(character, fmt))
        return _atomic_write(Path(out), data)
    if png:
        raise CharacterImportError("--png applies to card formats (v2, v3) only")
    if fmt == "charx":
        return _atomic_write(Path(out), card_export.card_charx_bytes(character))
    if fmt == "jsonl":
        return haruhi_formats.write_role_jsonl(character, out, embedder)
    if fmt == "zip":
        return haruhi_formats.write_folder_zip(character, out)
    raise CharacterImportError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
