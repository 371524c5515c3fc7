"""What keeps the evaluation honest: each case's excluded scenes (its source scene, and any other scene holding the
answer line verbatim), and the index that applies them to every search and stops the run if one ever leaks."""

from __future__ import annotations

import random
from collections.abc import Collection
from typing import Any

import numpy as np

from ..character.folder import Character
from ..retrieval.index import SearchResult
from ..types import ScoredScene
from .cases import EvalCase

__all__ = ["EvalIndex", "ExclusionLeak", "case_excludes"]


class ExclusionLeak(RuntimeError):
    """An excluded scene reached a prompt: the evaluation would be dishonest, so it stops."""


_QUERY_VECTORS: dict[tuple[str, str], np.ndarray] = {}  # (embedder id, text) -> vector, for the whole process


class EvalIndex:
    """Stands in for a chatbot's index: adds the case's exclusions, caches query vectors and, in
    ``random`` mode, returns random scenes instead of the nearest ones."""

    def __init__(self, index: Any, mode: str = "retrieve", seed: int = 0):
        self.index, self.mode, self.seed = index, mode, seed
        self.exclude: set[str] = set()
        self.last_ids: list[str] = []  # what the last search returned, before packing

    def __getattr__(self, name: str) -> Any:
        return getattr(self.index, name)

    def embed_query(self, text: str) -> np.ndarray:
        key = (self.index.embedder_id, text)
        vec = _QUERY_VECTORS.get(key)
        if vec is None:
            vec = _QUERY_VECTORS[key] = self.index.embed_query(text)
        return vec

    def search(self, query: str, top_k: int, *, exclude: Collection[str] = (), **kwargs: Any) -> SearchResult:
        exclude = set(exclude) | self.exclude
        if self.mode == "random":
            pool = [s for s in self.index.scenes if s.parent not in exclude]
            rng = random.Random(f"{self.seed}:{query}:{sorted(exclude)}")
            hits = SearchResult([ScoredScene(s, 0.0) for s in rng.sample(pool, min(top_k, len(pool)))])
        else:
            hits = self.index.search(query, top_k, exclude=exclude, **kwargs)
        self.last_ids = list(dict.fromkeys(h.scene.parent for h in hits))  # windows count as their scene
        leaked = exclude.intersection(self.last_ids)
        if leaked:  # the honesty check of the whole evaluation
            raise ExclusionLeak(f"excluded scene(s) {sorted(leaked)} were retrieved")
        return hits


def case_excludes(character: Character, case: EvalCase) -> list[str]:
    """The source scene plus any other scene that holds the answer line verbatim."""
    out = [case.scene_id]
    for s in character.scenes:
        if s.id != case.scene_id and any(ln.text.strip() == case.answer for ln in s.lines):
            out.append(s.id)
    return out
