"""The web demo's characters: the ones it offers, their names, cards and avatars, and adding new ones
(importing a card or a ChatHaruhi zip, or creating one from a form).

A character a visitor adds is that browser's own: it is written under ``web_characters/`` in the home
folder, listed for that browser only, and takes a folder name no other character has (``haruhi-2`` when
``haruhi`` is taken), so it never hides a built-in one nor changes what another visitor sees. With
``shared_imports`` (the operator's choice: ``chatharuhi demo --shared-imports``) additions go to the user's
characters folder and are listed for everyone, still under a name that collides with nothing."""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ..config import SYSTEM_PROMPT_FILE, cache_dir, home_dir
from ..errors import CharacterError, InputError
from ..interop.folder import MAX_NAME_CHARS
from .avatars import AVATAR_FILES, read_avatar, safe_file, thumbnail
from .render import literal, markup
from .state import WEB_IMPORTS_DIR

if TYPE_CHECKING:
    from ..character.discovery import CharacterEntry
    from ..character.folder import Character
    from ..sessions.owners import Owners

logger = logging.getLogger("chatharuhi")
SCENE_SEPARATOR = "---"  # pasted scenes are separated by a line holding only this
MAX_UPLOAD_BYTES = 50 * 1024 * 1024


AUTO_LANGUAGE = "auto"  # the form's "detect it from the scenes"
LANGUAGES = (AUTO_LANGUAGE, "zh", "en")


class ImportClash(InputError):
    """An import whose folder name is taken: the existing character can be opened, or the import made a copy."""

    def __init__(self, existing: str, free: str, file: str):
        self.existing, self.free, self.file = existing, free, file
        super().__init__(f"a character called {existing!r} is already here: open it, or import {file} as a copy "
                         f"called {free!r}")


class Shelf:
    """The characters the demo offers (folders that load and have a system prompt), found once and on refresh;
    visitors' own additions are seen only by their browser unless ``shared_imports``."""

    def __init__(self, characters_dir: Any = None, owners: "Owners | None" = None, shared_imports: bool = False):
        self.characters_dir = characters_dir
        self.owners = owners
        self.shared_imports = shared_imports
        self._lock = threading.Lock()
        self._loaded: dict[str, Character] = {}  # folder name -> parsed once, shared by its chatbots
        self.entries: dict[str, CharacterEntry] = {}
        self.private: dict[str, str] = {}  # folder name -> the owner digest of the browser that added it
        self.refresh()
        if not self.public():
            raise InputError("no characters found: add a character folder or pass --characters-dir DIR")

    @staticmethod
    def private_dir() -> Path:
        """Where visitors' own characters are written."""
        return home_dir() / WEB_IMPORTS_DIR

    def refresh(self) -> None:
        """Scan the characters folders again (after an import or a new character)."""
        from ..character.discovery import list_characters, scan_folder

        usable = lambda e: e.error is None and (e.path / SYSTEM_PROMPT_FILE).is_file()  # noqa: E731
        found = {e.name: e for e in list_characters(self.characters_dir) if usable(e)}
        owners = self.owners.character_owners() if self.owners is not None else {}
        private = {n: e for n, e in scan_folder(self.private_dir()).items()
                   if usable(e) and n in owners and n not in found}  # a name never hides a public one
        with self._lock:
            for name in [n for n in self._loaded if n not in found and n not in private
                         or (found.get(n) or private[n]).path != self.entries[n].path]:
                del self._loaded[name]
            self.entries = {**found, **private}
            self.private = {n: owners[n] for n in private}

    def public(self) -> list[str]:
        """The folder names every visitor sees."""
        return [n for n in self.entries if n not in self.private]

    def visible(self, name: str | None, owner: str = "") -> bool:
        """Whether the browser with owner digest ``owner`` may see the character ``name``."""
        return name in self.entries and (name not in self.private or bool(owner) and self.private[name] == owner)

    def check_visible(self, name: str | None, owner: str = "") -> None:
        """``InputError`` listing what this browser may pick, unless it may see ``name``."""
        if not self.visible(name, owner):
            shown = ", ".join(n for n in self.entries if self.visible(n, owner))
            raise InputError(f"unknown character {name!r}; available: {shown}")

    def free_name(self, wanted: str) -> str:
        """``wanted``, or ``wanted-2``, ``wanted-3``, ...: a folder name no character has, in any folder."""
        from ..character.discovery import search_dirs

        taken = {n.casefold() for n in self.entries} | {p.name.casefold() for d in [*search_dirs(
            self.characters_dir), self.private_dir()] if d.is_dir() for p in d.iterdir()}
        name, n = wanted, 1
        while name.casefold() in taken:
            n += 1
            name = f"{wanted[:MAX_NAME_CHARS - 4]}-{n}"
        return name

    # -- looking up ------------------------------------------------------------------------------
    def entry(self, name: str | None) -> "CharacterEntry":
        """The entry of a folder name; ``InputError`` listing the others if there is none."""
        entry = self.entries.get(name or "")
        if entry is None:
            raise InputError(f"unknown character {name!r}; available: {', '.join(self.entries)}")
        return entry

    def character(self, name: str) -> "Character":
        """The loaded character of a folder (parsed once)."""
        from ..character.folder import load_character

        entry = self.entry(name)
        with self._lock:
            found = self._loaded.get(name)
        if found is None:
            found = load_character(entry.path)
            with self._lock:
                found = self._loaded.setdefault(name, found)
        return found

    def folder_of(self, stored: str) -> str:
        """The folder name of a character as a session stores it (``Character.name``: the manifest's name)."""
        if stored in self.entries:
            return stored
        for name, e in self.entries.items():
            if e.manifest and e.manifest.name == stored:
                return name
        raise InputError(f"the character {stored!r} of this chat is no longer installed")

    def choices(self, owner: str = "") -> list[tuple[str, str]]:
        """Dropdown choices for the browser with owner digest ``owner``: (label, folder name)."""
        shown = {name: self.display_name(name) for name in self.entries if self.visible(name, owner)}
        return [(label if label == name else f"{label} ({name})", name) for name, label in shown.items()]

    def default(self, speaks: "Callable[[str], bool] | None" = None) -> str:
        """The character shown when a page opens (never one a visitor added): 凉宫春日, unless the model cannot speak
        her language (the embedded English model): then the first English one (sherlock among the built-ins)."""
        public = self.public()
        first = "haruhi" if "haruhi" in public else public[0]
        if speaks is None or speaks(self.language(first)):
            return first
        preferred = [n for n in ("sherlock", *public) if n in public and speaks(self.language(n))]
        return preferred[0] if preferred else first

    def language(self, name: str) -> str:
        """The character's language: its manifest's, else detected from its scenes."""
        m = self.entry(name).manifest
        if m is not None and "language" in m.model_fields_set:
            return m.language
        try:
            return self.character(name).language
        except CharacterError:
            return "zh"

    def shadowed(self, name: str) -> list[Path]:
        """Other folders of this name that this one hides (later folders in the search path win)."""
        return list(self.entry(name).shadowed)

    def editable(self, name: str, owner: str = "", local: bool = False) -> bool:
        """Whether the browser with owner digest ``owner`` may change or delete the character: one it added, or
        (``local``: the demo is this machine's own) one in the user's characters folder."""
        from ..character.discovery import user_characters_dir

        if name in self.private:
            return bool(owner) and self.private[name] == owner
        return (local or self.shared_imports) and \
            self.entry(name).path.parent.resolve() == user_characters_dir().resolve()

    def display_name(self, name: str) -> str:
        """The human-facing name of a character folder."""
        m = self.entry(name).manifest
        return (m.display_name if m else None) or name

    def greeting(self, name: str) -> str:
        """The character's greeting ("" if it has none)."""
        m = self.entry(name).manifest
        return (m.greeting if m else None) or ""

    def card(self, name: str) -> str:
        """A short card: display name and description, shown as text (``render``)."""
        m = self.entry(name).manifest
        return f"### {literal(self.display_name(name))}\n\n{markup((m.description if m else None) or '')}".strip()

    def default_role(self, name: str) -> str:
        """The user's default in-story name for a character (in its language, detected from its scenes when the
        manifest does not say)."""
        m = self.entry(name).manifest
        if m and m.user_role:
            return m.user_role
        return "用户" if self.language(name).startswith("zh") else "User"

    # -- avatars ---------------------------------------------------------------------------------
    def avatar(self, name: str) -> tuple[Path | None, str]:
        """A small PNG copy of the folder's avatar that Gradio may serve, and a note if it cannot be shown."""
        return thumbnail(self.entry(name).path, name, self.display_name(name))

    # -- adding characters -----------------------------------------------------------------------
    def destination(self, owner: str) -> Path:
        """Where a character the browser ``owner`` adds is written (its own folder, unless imports are shared)."""
        from ..character.discovery import user_characters_dir

        if self.shared_imports:
            return user_characters_dir()
        if not owner or self.owners is None:
            raise InputError("this page has no browser token yet: reload the page")
        return self.private_dir()

    def added(self, dest: Path, owner: str) -> str:
        """Record a character just written for ``owner`` (as theirs, unless imports are shared); its folder name."""
        if not self.shared_imports:
            self.owners.claim_character(dest.name, owner)  # type: ignore[union-attr]
        self.refresh()
        return dest.name

    def import_file(self, path: str | Path, name: str | None = None, owner: str = "", as_copy: bool = False) -> str:
        """Import a card (PNG/JSON/CHARX), a ChatHaruhi role (zip/JSONL) or a folder zip for the browser with
        owner digest ``owner``; returns the folder name (a free one: see the module's docstring).

        When the card's own name is that of a character this browser sees, ``ImportClash`` names it and the free
        name, so the page can offer to open that one; ``as_copy`` imports under the free name."""
        from ..interop import read_draft
        from ..interop.folder import safe_name, write_draft

        path = Path(path)
        if not path.is_file():
            raise InputError("nothing to import: drop a card PNG/JSON, a .charx or a ChatHaruhi zip")
        if path.stat().st_size > MAX_UPLOAD_BYTES:
            raise InputError(f"{path.name} is {path.stat().st_size / 2**20:.0f} MB; the limit for an import is "
                             f"{MAX_UPLOAD_BYTES // 2**20} MB")
        to = self.destination(owner)
        asked = (name or "").strip()
        if asked and self.free_name(safe_name(asked, "character")) != safe_name(asked, "character"):
            raise InputError(f"could not import {path.name}: {asked} already exists; give it another folder name")
        try:
            draft = read_draft(path, name=asked or None)
            wanted = safe_name(draft.name, "character")
            free = self.free_name(wanted)
            seen = next((n for n in self.entries if n.casefold() == wanted.casefold() and self.visible(n, owner)),
                        None)
            if free != wanted and seen is not None and not asked and not as_copy:
                raise ImportClash(seen, free, path.name)
            draft.name = free  # the card's own name: made free
            dest = write_draft(draft, to)
        except CharacterError as exc:
            reason = _without_paths(str(exc), path, to / "x").removeprefix(f"{path.name}: ")
            raise InputError(f"could not import {path.name}: {reason}") from None
        except RecursionError:
            raise InputError(f"could not import {path.name}: it is nested too deeply to be a character") from None
        self._check_avatar(dest)
        return self.added(dest, owner)

    # -- changing one's own characters ---------------------------------------------------------------
    def _own(self, name: str, owner: str = "", local: bool = False) -> Path:
        if not self.editable(name, owner, local):
            where = "built in" if self.entry(name).builtin else f"in {self.entry(name).path.parent}"
            raise InputError(f"{self.display_name(name)} is {where}, not one of your characters: export it as a card "
                             "and import that to have a copy you can change")
        return self.entry(name).path

    def update(self, name: str, display_name: str, greeting: str, language: str, system_prompt: str, *,
               owner: str = "", local: bool = False) -> None:
        """Change one's own character's display name, greeting, language and system prompt (checked by loading)."""
        from ..character.folder import Manifest
        from ..config import MANIFEST_FILE
        from ..interop.folder import manifest_toml

        folder = self._own(name, owner, local)
        if not (system_prompt or "").strip():
            raise InputError("the system prompt is empty: say who the character is and how they speak")
        data = self.entry(name).manifest.model_dump(exclude_unset=True) if self.entry(name).manifest else {}
        for key, value in (("display_name", display_name), ("greeting", greeting)):
            if (value or "").strip():
                data[key] = value.strip()
            else:
                data.pop(key, None)
        data.pop("language", None)
        if language and language != AUTO_LANGUAGE:
            data["language"] = language
        try:
            Manifest.model_validate(data)
        except ValueError as exc:
            raise InputError(f"the character was not changed: {exc}") from None
        toml = manifest_toml({k: v for k, v in data.items() if v not in (None, [], {})})
        for file, text in ((MANIFEST_FILE, toml), (SYSTEM_PROMPT_FILE, system_prompt.strip() + "\n")):
            tmp = folder / f".{file}.tmp"
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(folder / file)
        with self._lock:
            self._loaded.pop(name, None)  # parsed again with the new manifest and prompt
        self.refresh()

    def export_card(self, name: str) -> Path:
        """The character as a SillyTavern V2 PNG card (its greeting as first_mes), in a fresh temporary folder."""
        from ..interop import export_character

        out = Path(tempfile.mkdtemp(prefix="export-", dir=_tmp_dir())) / f"{safe_file(name)}.card.png"
        return export_character(self.character(name), "v2", out, png=True)

    def delete(self, name: str, *, owner: str = "", local: bool = False) -> Path:
        """Delete one's own character folder for good; returns where it was."""
        folder = self._own(name, owner, local)
        shutil.rmtree(folder)
        with self._lock:
            self._loaded.pop(name, None)
        self.refresh()
        return folder

    def create(self, name: str, display_name: str, prompt: str, scenes_text: str,
               scene_files: Iterable[str | Path] = (), avatar: str | Path | None = None, owner: str = "",
               language: str = AUTO_LANGUAGE, greeting: str = "") -> str:
        """Write a new character folder from the form, validated before it appears, for the browser with owner
        digest ``owner``; returns its folder name."""
        from ..character.validate import validate_folder
        from ..interop.folder import CharacterDraft, safe_name, write_draft

        name = (name or "").strip()
        if not name:
            raise InputError("the character needs a name (the folder name, e.g. nagato)")
        if safe_name(name) != name or name.startswith("."):
            raise InputError(f"the name {name!r} looks like a path or has characters a folder name cannot have: "
                             "use letters, digits, - or _ (e.g. nagato)")
        if not (prompt or "").strip():
            raise InputError("the system prompt is empty: say who the character is and how they speak")
        scenes = [s.strip() for s in (scenes_text or "").split(f"\n{SCENE_SEPARATOR}\n") if s.strip()]
        for file in scene_files or ():
            try:
                scenes.append(Path(file).read_text(encoding="utf-8").strip())
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"cannot read the scene file {Path(file).name} as UTF-8 text: {exc}") from None
        if not any(scenes):
            raise InputError("no scenes: paste at least one scene (lines like 名字:「台词」), or upload .txt files")
        to = self.destination(owner)
        if self.free_name(name) != name:
            raise InputError(f"a character called {name!r} already exists: pick another name")
        files = {}
        if avatar:
            out = io.BytesIO()
            read_avatar(Path(avatar)).save(out, "PNG")
            files["avatar.png"] = out.getvalue()
        if language not in LANGUAGES:
            raise InputError(f"language {language!r}: choose one of {', '.join(LANGUAGES)}")
        manifest = {"name": name, **({"display_name": display_name.strip()} if (display_name or "").strip() else {}),
                    **({"language": language} if language != AUTO_LANGUAGE else {}),
                    **({"greeting": greeting.strip()} if (greeting or "").strip() else {})}
        draft = CharacterDraft(name, prompt.strip(), [(f"{i:03d}.txt", s) for i, s in enumerate(scenes, 1) if s],
                               manifest, files, source="the form")
        staging = Path(tempfile.mkdtemp(prefix="create-", dir=_tmp_dir()))
        try:
            try:
                trial = write_draft(draft, staging)
            except CharacterError as exc:
                raise InputError(f"the character does not load: {_without_paths(str(exc), staging)}") from None
            errors = [p for p in validate_folder(trial) if p.severity == "error"]
            if errors:
                listing = "; ".join(f"{p.path.relative_to(trial) if p.path.is_relative_to(trial) else p.path.name}"
                                    f"{':' + str(p.line) if p.line else ''}: {p.message}" for p in errors)
                raise InputError(f"the character was not saved: {listing}")
            dest = write_draft(draft, to)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.added(dest, owner)

    def _check_avatar(self, folder: Path) -> None:
        """An imported card's image becomes the avatar only if it is a sane size (the character is kept anyway)."""
        for f in AVATAR_FILES:
            if (folder / f).is_file():
                try:
                    read_avatar(folder / f)
                except InputError as exc:
                    logger.warning("chatharuhi demo: %s", exc)


def _tmp_dir() -> Path:
    return cache_dir("tmp")


def _without_paths(text: str, *paths: Path) -> str:
    """An error message without the server's temporary paths (the visitor only knows the file name)."""
    for p in sorted(paths, key=lambda p: len(str(p)), reverse=True):  # the deepest first: folders may nest
        text = text.replace(str(p.parent) + "/", "").replace(str(p), p.name)
    return text
