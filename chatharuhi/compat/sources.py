"""ChatHaruhi's ways of naming a character, each turned into a ``Character``.

    system_prompt= + story_text_folder=   a prompt (text, or a path ending in .txt) and a folder of .txt scenes
    role_name=                            one of ChatHaruhi's 32 roles (any name or alias), pulled and cached
    role_from_hf='owner/dataset/name'     one packaged role JSONL from a Hugging Face dataset
    role_from_hf='owner/dataset'          the dataset's train split
    role_from_jsonl=                      a packaged role JSONL on disk (bad lines skipped with a warning)
    system_prompt= + story_db=            a persisted Chroma folder (ChatHaruhi's save_story_db, or ours)
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..character.folder import Character, load_character, parse_scene, read_text
from ..config import cache_dir
from ..errors import CharacterImportError, CharacterNotFound, InputError, InvalidCharacter
from .roles import ROLE_NAMES, builtin_role_spec, close_role_names

STORY_DB_COLLECTION = "search"  # the collection name ChatHaruhi's ChromaDB uses
EMBEDDER_KEY = "chatharuhi_embedder"  # collection metadata: the id of the embedder that made the vectors


def read_system_prompt(value: str | os.PathLike) -> str:
    """ChatHaruhi's rule: a value ending in ``.txt`` is a file to read (UTF-8), anything else is the prompt."""
    if isinstance(value, os.PathLike) or str(value).endswith(".txt"):
        path = Path(value).expanduser()
        if not path.is_file():
            raise InvalidCharacter("system_prompt= names a .txt file that does not exist", path=path)
        text = read_text(path).strip()
        if not text:
            raise InvalidCharacter("the system prompt file is empty", path=path)
        return text
    if not str(value).strip():
        raise InputError("system_prompt= is empty: pass the prompt text or a .txt file")
    return str(value).strip()


def _in_memory(name: str, path: Path, system_prompt: str, texts: list[tuple[str, str]], source: Path) -> Character:
    scenes = [s for s in (parse_scene(scene_id, text) for scene_id, text in texts) if s.lines]
    if not scenes:
        raise InvalidCharacter("no non-empty scenes", path=source)
    return Character(name, path, system_prompt, scenes)


def from_story_folder(system_prompt: str, folder: str | os.PathLike) -> Character:
    """A character from a prompt and a folder of ``.txt`` scenes (ChatHaruhi reads the top level only)."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise InvalidCharacter("story_text_folder= is not a folder", path=folder)
    texts = [(p.name, read_text(p)) for p in sorted(folder.iterdir()) if p.suffix == ".txt" and p.is_file()]
    if not texts:
        raise InvalidCharacter("story_text_folder= holds no .txt files", path=folder)
    name = folder.parent.name if folder.name == "texts" else folder.name
    return _in_memory(name or "character", folder, system_prompt, texts, folder)


def from_role_name(name: str, characters_dir: Any = None) -> Character:
    """A local character of that name or alias (built in, imported or in ``characters_dir``), else one of
    ChatHaruhi's packaged roles (pulled once, then cached). Local first: no download when the character is here."""
    import logging

    from ..character.discovery import find_entry, scan
    from ..interop.pull import pull_role

    spec = builtin_role_spec(name)
    try:
        entry = find_entry(name, characters_dir)
    except CharacterNotFound as exc:
        if spec is None:
            local = sorted(scan(characters_dir))
            raise CharacterNotFound(name, sorted({*local, *ROLE_NAMES}),
                                    close_role_names(name) or exc.suggestions) from None
    else:
        if entry.error is not None:
            raise entry.error
        if spec is not None:
            logging.getLogger("chatharuhi").info(
                "role_name=%r: using the local character %s (%s), not downloading ChatHaruhi's packaged role; "
                "role_from_hf=%r gets that one", name, entry.name, entry.path, spec)
        return load_character(entry.path)
    try:
        return load_character(pull_role(spec))
    except CharacterImportError as exc:
        raise CharacterImportError(f"role_name={name!r} is ChatHaruhi's packaged role {spec}: {exc} "
                                   f"(role={name!r} picks a local character instead)") from None


def from_hf(spec: str) -> Character:
    """``owner/dataset/name`` (one role JSONL) or ``owner/dataset`` (the train split)."""
    from ..interop.pull import pull_dataset, pull_role

    if spec.strip().strip("/").count("/") == 1:
        return load_character(pull_dataset(spec))
    if spec.strip().strip("/").count("/") < 1:
        raise InputError(f"role_from_hf={spec!r}: use 'owner/dataset/name' (one role file) or 'owner/dataset'")
    return load_character(pull_role(spec))


def from_jsonl(path: str | os.PathLike, strict: bool = False) -> Character:
    """A packaged role JSONL; a line that is not JSON is skipped with a warning counting them (unless ``strict``).

    The file is imported once into ``<home>/compat/jsonl/<content hash>/`` (its vectors seed the cache)."""
    from ..interop.folder import write_draft
    from ..interop.haruhi_formats import read_role_jsonl

    path = Path(path).expanduser()
    if not path.is_file():
        raise CharacterImportError("role_from_jsonl= names no file", path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    root = cache_dir("compat", "jsonl", digest)
    done = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    bad: list[int] | None = None if strict else []
    draft = read_role_jsonl(path, bad_lines=bad)  # read every time: strict mode and the warning see the file
    folder = done[0] if done else write_draft(draft, root, overwrite=True)
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        warnings.warn(f"{path}: skipped {len(bad)} line(s) that are not JSON objects (lines {shown}); "
                      "pass strict_jsonl=True to refuse such a file", RuntimeWarning, stacklevel=4)
    return load_character(folder)


def from_story_db(system_prompt: str, folder: str | os.PathLike) -> tuple[Character, np.ndarray | None, str | None]:
    """A persisted Chroma folder: (character, its stored vectors, the id of the embedder that made them)."""
    folder = Path(folder).expanduser().resolve()
    if not (folder / "chroma.sqlite3").is_file():
        raise InvalidCharacter("story_db= is not a Chroma folder (no chroma.sqlite3 in it); build one with "
                               "save_story_db(path), or pass story_text_folder= for a folder of .txt scenes",
                               path=folder)
    try:
        import chromadb
    except ImportError:
        raise CharacterImportError("story_db= needs chromadb: pip install 'chatharuhi[chroma]'", folder) from None
    try:
        client = chromadb.PersistentClient(path=os.fspath(folder))
        names = [getattr(c, "name", c) for c in client.list_collections()]
        name = STORY_DB_COLLECTION if STORY_DB_COLLECTION in names else (names[0] if len(names) == 1 else None)
        if name is None:
            raise CharacterImportError(f"no collection {STORY_DB_COLLECTION!r} (found: {', '.join(names) or 'none'})",
                                       folder)
        collection = client.get_collection(name, embedding_function=None)
        got = collection.get(include=["documents", "embeddings"])
        metadata = collection.metadata or {}
    except CharacterImportError:
        raise
    except Exception as exc:  # noqa: BLE001 - chromadb's errors have no common base
        raise CharacterImportError(f"story_db= cannot be read as a Chroma database: {exc}", folder) from None
    docs = got.get("documents") or []
    if not any(d and d.strip() for d in docs):
        raise CharacterImportError("story_db= holds no documents", folder)
    texts = [(f"{i:04d}.txt", d) for i, d in enumerate(docs, start=1) if d and d.strip()]
    character = _in_memory(folder.name, folder, system_prompt, texts, folder)
    embeddings = got.get("embeddings")
    vectors = None
    if embeddings is not None and len(embeddings) == len(docs) and len(character.scenes) == len(docs):
        vectors = np.asarray(embeddings, dtype=np.float32)
    return character, vectors, metadata.get(EMBEDDER_KEY)
