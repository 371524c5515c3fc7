"""Write an imported character as a native folder, atomically.

Every importer builds a ``CharacterDraft`` (prompt, scenes, manifest, extra files, optional stored
vectors); ``write_draft`` writes it into a temporary folder beside the destination, loads it back
with the real loader (so a folder that would not load is never left behind), then renames it into
place. Stored vectors go into the embedding cache, keyed by scene content, so a chatbot whose
embedder has the same id does not re-embed.

An imported file is someone else's: its extra files never replace one the importer wrote (the prompt, the
scenes, the manifest), and its manifest never chooses an operator's setting. ``[adapter] served_name`` (the
model an OpenAI-compatible upstream is asked for, on the operator's key) is removed, and an ``[adapter]``
whose files or base lie outside the folder is removed whole; each with a warning saying what and why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..character.folder import Character, Manifest, load_character, tomllib
from ..config import MANIFEST_FILE, SYSTEM_PROMPT_FILE, TEXTS_DIR
from ..errors import CharacterError, CharacterImportError
from .safezip import SafeZip, ZipMember

MAX_NAME_CHARS = 80  # a folder or file name (CJK names are 3 bytes a character; file systems allow 255)
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')
_TEMP_FOLDER = re.compile(r"^\..*\.(import|old)-[A-Za-z0-9_]+$")  # what write_draft's mkdtemp calls create
STALE_TEMP_S = 3600.0  # an import temp folder untouched this long was left by a killed import: removed


def plain_name(text: str) -> str:
    """``text`` without invisible format characters: direction overrides (``Evil\u202egnp.exe`` shows as
    ``Evilexe.png``) and zero-width ones, which make a name look like another."""
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


def safe_name(text: str, fallback: str = "") -> str:
    """A file or folder name from free text: no separators, control or invisible characters, no leading dots."""
    name = _UNSAFE.sub("_", plain_name(text or "")).strip().strip(".").strip()
    name = re.sub(r"\s+", " ", name)[:MAX_NAME_CHARS].strip()
    return name or fallback


def scene_path(scene_id: str) -> tuple[str, ...]:
    """The path parts of a scene id under ``texts/`` (each part made safe; ends in ``.txt``)."""
    parts = [safe_name(p, "scene") for p in scene_id.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    if not parts:
        parts = ["scene"]
    if not parts[-1].endswith(".txt"):
        parts[-1] += ".txt"
    return tuple(parts)


@dataclass
class CharacterDraft:
    """A character about to be written: what every importer produces."""

    name: str
    system_prompt: str
    scenes: list[tuple[str, str]]  # (scene id, text), in order
    manifest: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes | ZipMember] = field(default_factory=dict)  # extra files by relative path (card.json,
    # ...); a ZipMember is streamed from its archive when written
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # embedder id -> one row per scene
    source: str = ""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def manifest_toml(manifest: dict[str, Any]) -> str:
    """``character.toml`` text for a manifest dict (validated first; ``None`` values left out; a table such as
    ``adapter`` last)."""
    Manifest.model_validate(manifest)
    plain = "".join(f"{key} = {_toml_value(v)}\n" for key, v in manifest.items()
                    if v is not None and not isinstance(v, dict))
    tables = "".join(f"\n[{key}]\n" + "".join(f"{k} = {_toml_value(x)}\n" for k, x in v.items() if x is not None)
                     for key, v in manifest.items() if isinstance(v, dict))
    return plain + tables


_NAME_FIELDS = ("name", "display_name", "speaker", "user_role", "aliases", "narrators")


def _outside(folder: Path, value: str) -> bool:
    """Whether a path written in an imported manifest leads out of ``folder`` (absolute, ``~``, ``..``)."""
    path = Path(value)
    if path.is_absolute() or value.startswith("~") or (len(value) > 1 and value[1] == ":"):
        return True
    try:
        return not (folder / path).resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):
        return True


def imported_manifest(manifest: dict[str, Any], folder: Path) -> tuple[dict[str, Any], list[str]]:
    """An imported manifest without the operator's settings, and what was removed (one line each)."""
    names = {k: plain_name(v) if isinstance(v, str) else [plain_name(a) if isinstance(a, str) else a for a in v]
             for k, v in manifest.items() if k in _NAME_FIELDS and isinstance(v, (str, list))}
    changed = [k for k, v in names.items() if v != manifest[k]]
    manifest = {**manifest, **names}
    removed = [f"invisible characters (direction overrides, zero-width) from {k}" for k in changed]
    adapter = manifest.get("adapter")
    if not isinstance(adapter, dict):
        return manifest, removed
    adapter = dict(adapter)
    if adapter.pop("served_name", None) is not None:
        removed.append("[adapter] served_name: which model the upstream is asked for is the operator's choice")
    paths = [(k, adapter[k]) for k in ("path", "gguf", "base") if isinstance(adapter.get(k), str)
             and (k != "base" or adapter[k].startswith(("/", "~", ".")) or "/" in adapter[k] or "\\" in adapter[k])]
    outside = [f"[adapter]: its {k} = {v!r} leads outside the character's folder" for k, v in paths
               if _outside(folder, v)]
    without = {k: v for k, v in manifest.items() if k != "adapter"}
    if outside:
        return without, removed + outside
    if not any(adapter.get(k) for k in ("name", "path", "gguf")):  # served_name was all it named
        return without, removed
    return {**manifest, "adapter": adapter}, removed


def _check_imported_manifest(folder: Path, source: str) -> None:
    """Rewrite ``folder``'s manifest without what an import may not choose, warning about each removal."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        return
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError):
        return  # load_character names what is wrong with it
    kept, removed = imported_manifest(data, folder)
    if removed:
        path.write_text(manifest_toml(kept), encoding="utf-8")
        for line in removed:
            warnings.warn(f"{source or 'import'}: removed {line}; set it in {MANIFEST_FILE} yourself if you trust "
                          "this character", RuntimeWarning, stacklevel=4)


def manifest_dict(character: Character) -> dict[str, Any]:
    """The fields a character's manifest sets explicitly (what an exporter must carry)."""
    return character.manifest.model_dump(exclude_unset=True)


def _write(draft: CharacterDraft, folder: Path) -> None:
    (folder / SYSTEM_PROMPT_FILE).write_text(draft.system_prompt.strip() + "\n", encoding="utf-8")
    texts = folder / TEXTS_DIR
    texts.mkdir()
    seen: set[tuple[str, ...]] = set()
    for n, (scene_id, text) in enumerate(draft.scenes, start=1):
        parts = scene_path(scene_id)
        if parts in seen:
            parts = (*parts[:-1], f"{parts[-1][:-4]}-{n}.txt")
        seen.add(parts)
        target = texts.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text.strip() + "\n", encoding="utf-8")
    if draft.manifest:
        (folder / MANIFEST_FILE).write_text(manifest_toml(draft.manifest), encoding="utf-8")
    zips: dict[Path, SafeZip] = {}  # one open archive per source, so its read budget covers every entry
    try:
        for rel, data in draft.files.items():
            target = folder.joinpath(*[safe_name(p, "file") for p in rel.split("/")])
            if target.exists():  # the prompt, a scene, the manifest or another file already written
                raise CharacterImportError(f"the file {rel!r} would replace {target.relative_to(folder).as_posix()}, "
                                           "which the importer wrote; refusing to import", draft.source)
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(data, ZipMember):
                if data.zip_path not in zips:
                    zips[data.zip_path] = SafeZip(data.zip_path)
                zips[data.zip_path].copy_to(data.name, target)
            else:
                target.write_bytes(data)
    finally:
        for z in zips.values():
            z.close()


def remove_stale_temp_folders(root: Path, older_than_s: float = STALE_TEMP_S) -> list[Path]:
    """Delete the temporary folders an interrupted import (``kill -9``) left in ``root``; returns them."""
    removed = []
    now = time.time()
    for path in root.glob(".*.*-*"):
        if _TEMP_FOLDER.match(path.name) and path.is_dir() and not path.is_symlink():
            try:
                stale = now - path.stat().st_mtime > older_than_s
            except OSError:
                continue
            if stale:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def write_draft(draft: CharacterDraft, to: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``draft`` as ``to/<name>/``; nothing is left behind when anything fails."""
    name = safe_name(draft.name)
    if not name:
        raise CharacterImportError(f"the character has no usable name ({draft.name!r}); pass name=", draft.source)
    if not draft.system_prompt.strip():
        raise CharacterImportError("the character has no system prompt", draft.source)
    root = Path(to).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    dest = root / name
    if dest.exists() and not overwrite:
        raise CharacterImportError(f"{dest} already exists; pass --force (overwrite=True) or --name", draft.source)
    remove_stale_temp_folders(root)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name[:20]}.import-"))
    old = None
    try:
        _write(draft, tmp)
        _check_imported_manifest(tmp, draft.source)
        character = load_character(tmp)  # only a folder that loads is moved into place
        if dest.exists():
            old = Path(tempfile.mkdtemp(dir=root, prefix=f".{name[:20]}.old-"))
            os.replace(dest, old / "x")
        os.replace(tmp, dest)
    except CharacterError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, CharacterImportError):
            raise
        raise CharacterImportError(f"the converted character does not load: {exc}", draft.source) from None
    except (OSError, ValueError, TypeError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CharacterImportError(f"cannot write the character into {root}: {exc}", draft.source) from None
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    _store_vectors(draft, dest, character)
    return dest


def _store_vectors(draft: CharacterDraft, dest: Path, character: Character) -> None:
    """Seed the embedding cache with vectors that came with the file (keyed by content, per embedder)."""
    if not draft.vectors:
        return
    from ..retrieval.embeddings import normalize
    from ..retrieval.index import _save_cache, default_cache_file

    by_text = {}
    for i, (_, text) in enumerate(draft.scenes):
        by_text.setdefault(text.strip(), i)
    rows = [by_text.get(s.text) for s in character.scenes]
    if any(r is None for r in rows):
        return
    key = os.path.abspath(os.fspath(dest))
    for embedder_id, vectors in draft.vectors.items():
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(draft.scenes) or not np.isfinite(vectors).all():
            continue
        stub = type("StoredVectors", (), {"id": embedder_id})()
        _save_cache(default_cache_file(key, embedder_id), stub,
                    [s.content_hash for s in character.scenes], normalize(vectors[rows]))
