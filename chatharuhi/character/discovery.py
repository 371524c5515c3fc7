"""Find character folders by name or alias across the characters directories.

Search order (later folders shadow earlier ones with the same name): the built-in characters, the
user's folder ``$CHATHARUHI_HOME/characters``, the folders in ``$CHATHARUHI_CHARACTERS``
(``os.pathsep``-separated), then ``characters_dir=``. A broken folder is reported, never fatal to
the others.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..config import ENV_CHARACTERS, MANIFEST_FILE, SYSTEM_PROMPT_FILE, TEXTS_DIR, builtin_characters_dir, home_dir
from ..errors import CharacterError, CharacterNotFound, InvalidCharacter
from ..options import strict
from .folder import Character, Manifest, load_character, load_manifest

PathLike = str | os.PathLike


@dataclass
class CharacterEntry:
    """A character folder found on disk, with its manifest or the error that stops it loading."""

    name: str
    path: Path
    manifest: Manifest | None = None
    error: CharacterError | None = None
    shadowed: list[Path] = field(default_factory=list)  # folders of the same name earlier in the search path

    @property
    def builtin(self) -> bool:
        """Whether this is one of the characters shipped with chatharuhi."""
        return self.path.parent.resolve() == builtin_characters_dir().resolve()

    @property
    def aliases(self) -> list[str]:
        """The folder name plus the manifest's name and aliases."""
        extra = [self.manifest.name or "", *self.manifest.aliases] if self.manifest else []
        return [self.name, *(a for a in extra if a)]


def user_characters_dir() -> Path:
    """The user's own characters folder, where imports go by default."""
    return home_dir() / "characters"


def search_dirs(characters_dir: PathLike | Iterable[PathLike] | None = None) -> list[Path]:
    """The characters directories in search order, built-in first."""
    dirs = [builtin_characters_dir(), user_characters_dir()]
    dirs += [Path(p) for p in os.environ.get(ENV_CHARACTERS, "").split(os.pathsep) if p.strip()]
    if characters_dir is not None:
        extra = [characters_dir] if isinstance(characters_dir, (str, os.PathLike)) else list(characters_dir)
        dirs += [Path(p) for p in extra]
    seen, ordered = set(), []
    for d in (Path(p).expanduser() for p in dirs):
        key = d.resolve() if d.exists() else d
        if key not in seen:
            seen.add(key)
            ordered.append(d)
    return ordered


def is_character_folder(path: Path) -> bool:
    """Whether a folder looks like a character (has a prompt, scenes or a manifest); hidden folders, such as
    an import's ``.name.import-XXXX`` temporary folder, never are."""
    return not path.name.startswith(".") and path.is_dir() and \
        any((path / f).exists() for f in (SYSTEM_PROMPT_FILE, TEXTS_DIR, MANIFEST_FILE))


def scan(characters_dir: PathLike | Iterable[PathLike] | None = None) -> dict[str, CharacterEntry]:
    """Every character folder in the search path, keyed by folder name; later folders win."""
    found: dict[str, CharacterEntry] = {}
    for root in search_dirs(characters_dir):
        scan_folder(root, found)
    return found


def scan_folder(root: Path, found: dict[str, CharacterEntry] | None = None) -> dict[str, CharacterEntry]:
    """The character folders in ``root`` added to ``found`` (keyed by folder name; these win)."""
    found = {} if found is None else found
    if not root.is_dir():
        return found
    for path in sorted(root.iterdir()):
        if not is_character_folder(path):
            continue
        entry = CharacterEntry(path.name, path)
        try:
            entry.manifest = load_manifest(path)
        except CharacterError as exc:
            entry.error = exc
        if path.name in found:  # this folder wins: say which one it hides
            entry.shadowed = [*found[path.name].shadowed, found[path.name].path]
        found[path.name] = entry
    return found


def _check_name(name: str) -> None:
    if not name or not name.strip():
        raise CharacterNotFound(name, [])
    if "/" in name or "\\" in name or name in {".", ".."} or ".." in Path(name).parts or os.path.isabs(name):
        raise InvalidCharacter(
            f"character name {name!r} looks like a path; pass the name of a folder and the folder that holds "
            "it as characters_dir= (or --characters-dir)"
        )


def find_entry(name: str, characters_dir: PathLike | Iterable[PathLike] | None = None) -> CharacterEntry:
    """The folder whose name or alias matches ``name`` case-insensitively."""
    _check_name(name)
    entries = scan(characters_dir)
    wanted = name.strip().casefold()
    for entry in entries.values():  # folder names first, so an alias never hides a folder
        if entry.name.casefold() == wanted:
            return entry
    for entry in entries.values():
        if any(alias.casefold() == wanted for alias in entry.aliases):
            return entry
    names = sorted(entries)
    labels = {alias.casefold(): e.name for e in entries.values() for alias in e.aliases}
    close = difflib.get_close_matches(wanted, list(labels), n=3, cutoff=0.6)
    suggestions = list(dict.fromkeys(labels[c] for c in close))
    raise CharacterNotFound(name, names, suggestions, missing_dirs(characters_dir))


def missing_dirs(characters_dir: PathLike | Iterable[PathLike] | None) -> list[str]:
    """The folders passed as ``characters_dir`` that do not exist (a typo the user should hear about)."""
    if characters_dir is None:
        return []
    given = [characters_dir] if isinstance(characters_dir, (str, os.PathLike)) else list(characters_dir)
    return [str(p) for p in given if not Path(p).expanduser().is_dir()]


@strict
def find_character(name: str, characters_dir: PathLike | Iterable[PathLike] | None = None) -> Character:
    """Load the character called ``name`` (folder name or alias)."""
    entry = find_entry(name, characters_dir)
    if entry.error is not None:
        raise entry.error
    return load_character(entry.path)


@strict
def list_characters(characters_dir: PathLike | Iterable[PathLike] | None = None) -> list[CharacterEntry]:
    """Every character entry, sorted by name; broken ones carry their error."""
    return sorted(scan(characters_dir).values(), key=lambda e: e.name.casefold())


def resolve_character(ref: "str | os.PathLike | Character",
                      characters_dir: PathLike | Iterable[PathLike] | None = None) -> Character:
    """A ``Character`` from a loaded one, a folder path, or a name or alias to look up."""
    if isinstance(ref, Character):
        return ref
    path = Path(os.fspath(ref)).expanduser()
    if isinstance(ref, os.PathLike) or (os.sep in str(ref) and path.is_dir()):
        return load_character(path)
    return find_character(str(ref), characters_dir)
