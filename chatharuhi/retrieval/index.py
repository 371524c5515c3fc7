"""Scene vectors, their disk cache, and hybrid (dense + BM25) nearest-scene search.

Vectors are cached per (character, embedder id) in one ``.npz`` holding ``hashes`` (the scenes'
content hashes) and ``vectors``; a restart embeds nothing and an edited scene re-embeds alone. A
``VectorCache`` (``load``/``save`` by content hash) can stand in for the file: the PostgreSQL store's
keeps every replica's vectors in the database, so a new replica embeds nothing either.
``shared_index`` keeps one index per character in memory for every chatbot of the process.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from ..character.windows import windows
from ..config import (
    DEFAULT_DENSE_WEIGHT,
    DEFAULT_DUPLICATE_THRESHOLD,
    DEFAULT_EMBED_BATCH,
    DEFAULT_LEXICAL_WEIGHT,
    DEFAULT_NARRATORS,
    DEFAULT_TOP_K,
    EMBED_MAX_CHARS,
    QUERY_EMBED_MAX_CHARS,
    cache_dir,
)
from ..errors import EmbedderError, InputError
from ..types import Scene, ScoredScene
from .embeddings import Embedder
from .lexical import BM25
from .partition import PARTITION_MIN_SCENES, Partition

PROGRESS_MIN_TEXTS = 64  # below this a progress bar is noise
CANDIDATE_FACTOR = 2  # candidates ranked per wanted scene before near-duplicates are dropped (widened if needed)


def query_window(text: str, limit: int = QUERY_EMBED_MAX_CHARS) -> str:
    """The part of a user message that is embedded: its last ``limit`` characters (bounded work per turn)."""
    text = text.strip()
    return text[-limit:].lstrip() if len(text) > limit else text


class VectorCache(Protocol):
    """Where scene vectors outlive the process, by (embedder id, scene content hash)."""

    def load(self, embedder: Embedder, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors among ``hashes`` (missing ones are simply absent)."""

    def save(self, embedder: Embedder, hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Store the vectors of ``hashes`` (row i belongs to hashes[i])."""


class SearchResult(list):
    """The ranked ``ScoredScene`` list, plus ``duplicates``: ``(dropped id, id it duplicates)`` pairs."""

    def __init__(self, hits: Sequence[ScoredScene] = (), duplicates: Sequence[tuple[str, str]] = ()):
        super().__init__(hits)
        self.duplicates = list(duplicates)


class SceneIndex:
    """A character's scenes with their unit vectors; ``search`` ranks them for one user message."""

    def __init__(self, scenes: Sequence[Scene], vectors: np.ndarray, embedder: Embedder, *, bm25: BM25 | None = None):
        self.scenes = list(scenes)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.vectors.shape != (len(self.scenes), embedder.dim):
            raise EmbedderError(f"{len(self.scenes)} scenes but vectors of shape {self.vectors.shape} "
                                f"(embedder {embedder.id} has dim {embedder.dim})")
        self.embedder = embedder
        self.embedder_id = embedder.id
        self.positions = {scene.id: i for i, scene in enumerate(self.scenes)}
        self.windows_of: dict[str, list[int]] = {}  # a long scene's id -> the rows of its windows
        for i, scene in enumerate(self.scenes):
            if scene.source:
                self.windows_of.setdefault(scene.source, []).append(i)
        self._bm25 = bm25
        self._partition: Partition | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.scenes)

    @property
    def bm25(self) -> BM25:
        """The lexical index over the scene texts, built on first use."""
        if self._bm25 is None:
            with self._lock:
                if self._bm25 is None:
                    self._bm25 = BM25(s.text for s in self.scenes)
        return self._bm25

    @property
    def partition(self) -> Partition | None:
        """The coarse partition of a large index (``None`` below ``PARTITION_MIN_SCENES``), built on first use."""
        if self._partition is None and len(self.scenes) >= PARTITION_MIN_SCENES:
            with self._lock:
                if self._partition is None:
                    self._partition = Partition(self.vectors)
        return self._partition

    @classmethod
    def build(cls, scenes: Sequence[Scene], embedder: Embedder, cache_file: Path | VectorCache | None = None,
              progress: bool = False, batch_size: int = DEFAULT_EMBED_BATCH,
              announce: Callable[[str], None] | None = None) -> SceneIndex:
        """Embed the scenes not in ``cache_file`` (all of them without one), update the cache, index.

        ``announce`` hears one line before a build that has to embed many scenes (a first use)."""
        scenes = list(scenes)
        hashes = [s.content_hash for s in scenes]
        if cache_file is not None and hasattr(cache_file, "load"):  # a VectorCache: stores only what is new
            cached = cache_file.load(embedder, hashes)
        else:
            cached = _load_cache(cache_file, embedder) if cache_file is not None else {}
        first: dict[str, int] = {}
        for i, h in enumerate(hashes):
            if h not in cached:
                first.setdefault(h, i)  # identical scenes are embedded once
        missing = list(first.values())
        vectors = np.zeros((len(scenes), embedder.dim), dtype=np.float32)
        for i, h in enumerate(hashes):
            if h in cached:
                vectors[i] = cached[h]
        if missing:
            if announce is not None and len(missing) > PROGRESS_MIN_TEXTS:
                where = f" (kept in {cache_file} for next time)" if isinstance(cache_file, Path) else ""
                announce(f"indexing {len(missing)} passages with {embedder.id} for the first time{where}…")
            fresh = _embed(embedder, [scenes[i].text for i in missing], progress, batch_size)
            for i, vec in zip(missing, fresh):
                cached[hashes[i]] = vec
            for i, h in enumerate(hashes):
                vectors[i] = cached[h]
        if hasattr(cache_file, "save"):
            if missing:
                cache_file.save(embedder, [hashes[i] for i in missing], vectors[missing])
        elif cache_file is not None and (missing or set(cached) != set(hashes)):
            _save_cache(cache_file, embedder, hashes, vectors)
        index = cls(scenes, vectors, embedder)
        _ = index.bm25, index.partition  # built now, so the first turn does not pay for them
        return index

    def embed_query(self, text: str) -> np.ndarray:
        """The user's bare text as a unit vector, from its last ``QUERY_EMBED_MAX_CHARS`` characters."""
        return self.embedder.embed_query(query_window(text))

    def search(self, query: str, top_k: int = DEFAULT_TOP_K, *, exclude: Collection[str] = (),
               dense_weight: float = DEFAULT_DENSE_WEIGHT, lexical_weight: float = DEFAULT_LEXICAL_WEIGHT,
               duplicate_threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
               query_vector: np.ndarray | None = None, exact: bool = False) -> SearchResult:
        """The ``top_k`` best scenes for the user's bare text, best first, near-duplicates dropped."""
        if query_vector is None:
            query_vector = self.embed_query(query) if dense_weight else np.zeros(self.vectors.shape[1], np.float32)
        return self.search_vector(query_vector, top_k, text=query, exclude=exclude, dense_weight=dense_weight,
                                  lexical_weight=lexical_weight, duplicate_threshold=duplicate_threshold, exact=exact)

    def _dense(self, query_vector: np.ndarray, lexical: np.ndarray | None, pool: int, exact: bool) -> np.ndarray:
        """Cosine of every scene; on a partitioned index only probed rows and the best lexical rows
        are scored, the rest get -inf."""
        partition = None if exact else self.partition
        if partition is None:
            return self.vectors @ query_vector
        rows, scores = partition.probe(query_vector)
        dense = np.full(len(self.scenes), -np.inf, dtype=np.float32)
        dense[rows] = scores
        if lexical is not None:  # the best lexical matches are scored wherever they sit
            best = np.argpartition(-lexical, pool - 1)[:pool]
            dense[best] = self.vectors[best] @ query_vector
        return dense

    def search_vector(self, query_vector: np.ndarray, top_k: int = DEFAULT_TOP_K, *, text: str = "",
                      exclude: Collection[str] = (), dense_weight: float = DEFAULT_DENSE_WEIGHT,
                      lexical_weight: float = DEFAULT_LEXICAL_WEIGHT,
                      duplicate_threshold: float = DEFAULT_DUPLICATE_THRESHOLD, exact: bool = False) -> SearchResult:
        """Like ``search`` with the query already embedded; ``text`` feeds the lexical score."""
        n = len(self.scenes)
        if top_k <= 0 or n == 0:
            return SearchResult()
        lexical = self.bm25.normalized_scores(text) if lexical_weight and text else None
        dense = self._dense(np.asarray(query_vector, dtype=np.float32), lexical,
                            min(n, (top_k + len(exclude)) * CANDIDATE_FACTOR), exact)
        score = dense * dense_weight if lexical is None else dense * dense_weight + lexical * lexical_weight
        if exclude:  # a scene's id excludes its windows too
            rows = [self.positions[i] for i in set(exclude) if i in self.positions]
            score[rows + [r for i in set(exclude) for r in self.windows_of.get(i, ())]] = -np.inf
        allowed = int(np.isfinite(score).sum())
        if allowed == 0:
            return SearchResult()
        pool = min(allowed, top_k * CANDIDATE_FACTOR)
        while True:
            # argpartition picks the pool in O(n); only the pool is sorted. Widen it if duplicates ate it.
            part = np.argpartition(-score, pool - 1)[:pool] if pool < n else np.arange(n)
            ranked = part[np.lexsort((part, -score[part]))][:pool]
            chosen, duplicates = self._select(ranked, top_k, duplicate_threshold)
            if len(chosen) == top_k or pool == allowed:
                break
            pool = min(allowed, pool * 2)
        rows = ranked[chosen]
        lex = lexical[rows].tolist() if lexical is not None else [0.0] * len(rows)
        hits = [ScoredScene(self.scenes[r], s, d, x)
                for r, s, d, x in zip(rows.tolist(), score[rows].tolist(), dense[rows].tolist(), lex)]
        return SearchResult(hits, [(self.scenes[ranked[j]].id, self.scenes[ranked[k]].id) for j, k in duplicates])

    def _select(self, ranked: np.ndarray, top_k: int, threshold: float) -> tuple[list[int], list[tuple[int, int]]]:
        """Greedy pick in rank order, skipping a candidate too similar to one already picked.

        Returns positions within ``ranked``: the picks, and ``(dropped, kept)`` duplicate pairs."""
        if threshold >= 1.0:
            return list(range(min(top_k, len(ranked)))), []
        candidates = self.vectors[ranked]
        sims = (candidates @ candidates.T).tolist()  # one small matrix instead of a product per candidate
        chosen: list[int] = []
        duplicates: list[tuple[int, int]] = []
        for j, row in enumerate(sims):
            best = max(chosen, key=row.__getitem__) if chosen else None
            if best is not None and row[best] > threshold:
                duplicates.append((j, best))
                continue
            chosen.append(j)
            if len(chosen) == top_k:
                break
        return chosen, duplicates


def _embed(embedder: Embedder, texts: list[str], progress: bool, batch_size: int) -> np.ndarray:
    """Embed scene texts (each cut to ``EMBED_MAX_CHARS``) in batches, with a progress bar on long builds."""
    texts = [t[:EMBED_MAX_CHARS] for t in texts]
    batch_size = max(1, batch_size)
    bar = None
    if progress and len(texts) > PROGRESS_MIN_TEXTS:
        from tqdm import tqdm

        bar = tqdm(total=len(texts), desc=f"embedding scenes ({embedder.id})", unit="scene")
    parts = []
    try:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            out = np.asarray(embedder.embed_documents(chunk), dtype=np.float32)
            if out.shape != (len(chunk), embedder.dim):
                raise EmbedderError(f"{embedder.id} returned shape {out.shape} for {len(chunk)} texts "
                                    f"(expected ({len(chunk)}, {embedder.dim}))")
            parts.append(out)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return np.concatenate(parts)


def _load_cache(path: Path, embedder: Embedder) -> dict[str, np.ndarray]:
    """Cached vectors by content hash; a missing, foreign or corrupt file gives ``{}`` (with a warning)."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            hashes, vectors = data["hashes"], data["vectors"]
            stored_id = str(data["embedder_id"]) if "embedder_id" in data.files else embedder.id
        if stored_id != embedder.id:
            raise ValueError(f"made by embedder {stored_id!r}, not {embedder.id!r}")
        if vectors.ndim != 2 or vectors.shape != (len(hashes), embedder.dim) or not np.isfinite(vectors).all():
            raise ValueError(f"vectors of shape {vectors.shape} for {len(hashes)} hashes, dim {embedder.dim}")
    except Exception as exc:  # noqa: BLE001 - a bad cache is rebuilt, never fatal
        warnings.warn(f"ignoring embedding cache {path}: {exc}; re-embedding", RuntimeWarning, stacklevel=3)
        return {}
    return {str(h): v for h, v in zip(hashes, vectors.astype(np.float32))}


def _save_cache(path: Path, embedder: Embedder, hashes: list[str], vectors: np.ndarray) -> None:
    """Write the cache atomically (temp file + ``os.replace``); failure to write only warns."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, hashes=np.array(hashes, dtype="U64"), vectors=vectors.astype(np.float32),
                     embedder_id=np.array(embedder.id))
        os.replace(tmp, path)
    except OSError as exc:
        warnings.warn(f"could not write embedding cache {path}: {exc}", RuntimeWarning, stacklevel=3)
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "x"


def default_cache_file(character_key: str, embedder_id: str) -> Path:
    """Where a character's vectors for one embedder are cached under the chatharuhi home."""
    digest = hashlib.sha256(character_key.encode("utf-8")).hexdigest()[:10]
    tail = os.path.basename(character_key.rstrip("/\\")) or character_key
    return cache_dir("embeddings", f"{_safe(tail)}-{digest}") / f"{_safe(embedder_id)}.npz"


def scenes_fingerprint(scenes: Sequence[Scene]) -> str:
    """A hash of every scene's id and content: it changes when any scene is added, removed or edited."""
    h = hashlib.sha256()
    for s in scenes:
        h.update(f"{s.id}\0{s.content_hash}\n".encode("utf-8"))
    return h.hexdigest()[:16]


_indexes: dict[tuple[str, str, str], SceneIndex] = {}
_build_locks: dict[tuple[str, str], threading.Lock] = {}
_indexes_lock = threading.Lock()


def shared_index(key: str, scenes: Sequence[Scene], embedder: Embedder, cache_file: Path | VectorCache | None = None,
                 *, progress: bool = False, announce: Callable[[str], None] | None = None) -> SceneIndex:
    """The process-wide index for ``key``; rebuilt (from the cache) when the scenes change."""
    scenes = list(scenes)
    full = (key, embedder.id, scenes_fingerprint(scenes))
    with _indexes_lock:
        index = _indexes.get(full)
        if index is not None:
            return index
        build_lock = _build_locks.setdefault(full[:2], threading.Lock())
    with build_lock:  # one build per character; other characters are not blocked
        with _indexes_lock:
            index = _indexes.get(full)
        if index is None:
            index = SceneIndex.build(scenes, embedder, cache_file, progress=progress, announce=announce)
            with _indexes_lock:
                for stale in [k for k in _indexes if k[:2] == full[:2]]:
                    del _indexes[stale]  # an edited folder replaces its old index
                _indexes[full] = index
        return index


def index_for(character: Any, embedder: Embedder, *, progress: bool = False,
              cache: VectorCache | None = None, whole_scenes: bool = False,
              announce: Callable[[str], None] | None = None) -> SceneIndex:
    """The shared index of a loaded ``Character``, its vectors cached on disk (or in ``cache``).

    Long scenes are indexed as windows of whole lines (windows.py); ``whole_scenes`` indexes every
    scene whole instead (exports that must give back the scenes as they are, and ChatHaruhi story_dbs,
    whose documents are passages already)."""
    key = os.fspath(getattr(character, "path", "") or "") or character.name
    key = os.path.abspath(key) if os.path.sep in key or os.path.exists(key) else key
    if whole_scenes:  # same key and vector file: vectors are cached by content, whole or window alike
        passages = list(character.scenes)
    else:
        narrators = getattr(getattr(character, "manifest", None), "narrators", None) or DEFAULT_NARRATORS
        passages = windows(character.scenes, narrators=narrators)
    where = cache if cache is not None else default_cache_file(key, embedder.id)
    return shared_index(key, passages, embedder, where, progress=progress, announce=announce)


IndexFactory = Callable[[Any, Embedder], "SceneIndex"]  # (character, embedder) -> its index


def chosen_index(character: Any, embedder: Embedder, index: "SceneIndex | IndexFactory | None" = None,
                 vector_cache: Any = None) -> "SceneIndex":
    """A chatbot's scene index: ``index`` (an index, or a factory of one), else the character's shared index (its
    vectors cached on disk, or in ``vector_cache``)."""
    if index is None:
        return index_for(character, embedder, cache=vector_cache, whole_scenes=True)
    if vector_cache is not None:
        raise InputError("index= and vector_cache= both choose where the vectors live: pass one")
    return index(character, embedder) if callable(index) else index


def clear_shared_indexes() -> None:
    """Forget every shared index (tests, or to free memory)."""
    with _indexes_lock:
        _indexes.clear()
        _build_locks.clear()
