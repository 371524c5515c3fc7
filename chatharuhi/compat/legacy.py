"""ChatHaruhi's constructor keywords turned into this engine's terms: a character, a backend, an embedder, an index."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError, UnknownBackend
from .embedding import legacy_embedder
from .llms import LEGACY_LLM_NAMES, legacy_backend

DB_TYPES = {"naive": "naive", "chroma": "chroma", "Chroma": "chroma", "ChromaDB": "chroma", "chromadb": "chroma"}


@dataclass
class Legacy:
    """ChatHaruhi's keywords in this engine's terms."""

    character: Any = None  # a Character, or None when the caller named it our way (role=, character=)
    llm: Any = None
    llm_options: dict[str, Any] = field(default_factory=dict)
    embedder: Any = None
    vectors: np.ndarray | None = None  # stored with a story_db, made by the embedder ``vectors_id``
    vectors_id: str | None = None
    db: str = "naive"


def _one_source(given: dict[str, Any]) -> None:
    named = [k for k, v in given.items() if v is not None]
    if len(named) > 1:
        raise InputError(f"{' and '.join(named)} both name the character: pass one of them")


def _llm(llm: Any, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    if not isinstance(llm, str):
        return llm, options
    from ..backends.registry import available_backends

    names = available_backends()
    if llm in names:
        return llm, options
    mapped = legacy_backend(llm)
    if mapped is None:
        close = difflib.get_close_matches(llm, [*names, *LEGACY_LLM_NAMES], n=1, cutoff=0.6)
        raise UnknownBackend(llm, [*names, *LEGACY_LLM_NAMES], close[0] if close else None)
    backend, defaults = mapped
    return backend, {**defaults, **options}


def resolve_legacy(*, role: Any, character: Any, characters_dir: Any, llm: Any, llm_options: dict[str, Any],
                   embedder: Any, role_name: str | None, role_from_hf: str | None, role_from_jsonl: Any,
                   system_prompt: Any, story_text_folder: Any, story_db: Any, embedding: str | None,
                   db_type: str | None, strict_jsonl: bool) -> Legacy:
    """Turn ChatHaruhi's keywords into a character, a backend and an embedder (typed errors for conflicts)."""
    from . import sources

    out = Legacy(llm=llm, llm_options=dict(llm_options), embedder=embedder)
    if embedding is not None:
        if embedder is not None:
            raise InputError("embedding= (ChatHaruhi's name) and embedder= both choose the embedder: pass one")
        out.embedder = legacy_embedder(embedding)
    if db_type is not None:
        if db_type not in DB_TYPES:
            from ..errors import UnknownOption

            raise UnknownOption(db_type, "db_type=", list(DB_TYPES), kind="value")
        out.db = DB_TYPES[db_type]
    out.llm, out.llm_options = _llm(llm, out.llm_options)
    stories = {"story_text_folder": story_text_folder, "story_db": story_db}
    _one_source({"role": role, "character": character, "role_name": role_name, "role_from_hf": role_from_hf,
                 "role_from_jsonl": role_from_jsonl, "story_text_folder": story_text_folder, "story_db": story_db})
    if system_prompt is not None and all(v is None for v in stories.values()):
        raise InputError("system_prompt= needs story_text_folder= (a folder of .txt scenes) or story_db= "
                         "(a saved Chroma folder); a packaged role (role_name=, role_from_hf=, role_from_jsonl=) "
                         "brings its own prompt")
    if system_prompt is None and any(v is not None for v in stories.values()):
        name = next(k for k, v in stories.items() if v is not None)
        raise InputError(f"{name}= needs system_prompt= (the prompt text, or a .txt file)")
    if role_name is not None:
        out.character = sources.from_role_name(role_name, characters_dir)
    elif role_from_hf is not None:
        out.character = sources.from_hf(role_from_hf)
    elif role_from_jsonl is not None:
        out.character = sources.from_jsonl(role_from_jsonl, strict=strict_jsonl)
    elif story_text_folder is not None:
        out.character = sources.from_story_folder(sources.read_system_prompt(system_prompt), story_text_folder)
    elif story_db is not None:
        out.character, out.vectors, out.vectors_id = sources.from_story_db(
            sources.read_system_prompt(system_prompt), story_db)
    return out


def seed_story_vectors(legacy: Legacy, embedder: Any) -> None:
    """Put a story_db's stored vectors into the embedding cache when they were made by ``embedder``."""
    from ..retrieval.embeddings import normalize
    from ..retrieval.index import _save_cache, default_cache_file

    if legacy.vectors is None or legacy.character is None:
        return
    made_by = legacy.vectors_id
    if made_by is None and legacy.vectors.shape[1] == 1536:  # ChatHaruhi's own story_db: luotuo_openai vectors
        made_by = "openai:text-embedding-ada-002"
    if made_by != embedder.id or legacy.vectors.shape[1] != embedder.dim:
        return
    key = os.path.abspath(os.fspath(legacy.character.path))
    _save_cache(default_cache_file(key, embedder.id), embedder,
                [s.content_hash for s in legacy.character.scenes], normalize(legacy.vectors))


def build_index(legacy: Legacy, character: Any, embedder: Any, vector_cache: Any = None) -> Any:
    """The scene index: ours (``naive``), or a persistent Chroma collection (``db_type='chroma'``)."""
    from ..retrieval.index import _safe, index_for

    if legacy.db != "chroma":
        return index_for(character, embedder, cache=vector_cache, whole_scenes=True)  # ChatHaruhi's own passages
    if vector_cache is not None:
        raise InputError("db_type='chroma' keeps the vectors in Chroma: leave out vector_cache=")
    import hashlib

    from ..config import cache_dir
    from ..retrieval.chroma import ChromaIndex

    key = os.path.abspath(os.fspath(character.path or character.name))
    folder = cache_dir("compat", "chroma", hashlib.sha256(key.encode("utf-8")).hexdigest()[:16])
    return ChromaIndex(character.scenes, embedder, folder, _safe(character.name))
