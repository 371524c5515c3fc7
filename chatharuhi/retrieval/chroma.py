"""A ``SceneIndex`` whose dense search runs in a persistent chromadb collection (the ``[chroma]`` extra).

chromadb's default embedding function downloads a model and fails offline, so every collection
gets our embedder wrapped as its embedding function, and our own vectors.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from ..config import (
    DEFAULT_DENSE_WEIGHT,
    DEFAULT_DUPLICATE_THRESHOLD,
    DEFAULT_EMBED_BATCH,
    DEFAULT_LEXICAL_WEIGHT,
    DEFAULT_TOP_K,
)
from ..errors import EmbedderError
from ..types import Scene
from .embeddings import Embedder
from .index import CANDIDATE_FACTOR, SceneIndex, SearchResult, _embed, _safe
from .lexical import BM25


def _chroma_embedding_function(embedder: Embedder) -> Any:
    """Wrap our embedder for chromadb, whose default function downloads a model (and fails offline)."""
    from chromadb.api.types import EmbeddingFunction

    class ChatHaruhiEmbeddingFunction(EmbeddingFunction):
        def __init__(self, inner: Embedder):
            self.inner = inner

        def __call__(self, input: Any) -> Any:  # noqa: A002 - chromadb's parameter name
            return list(self.inner.embed_documents(list(input)))

        def embed_query(self, input: Any) -> Any:  # noqa: A002
            return [self.inner.embed_query(t) for t in input]

        @staticmethod
        def name() -> str:
            return "chatharuhi"

        def get_config(self) -> dict[str, Any]:
            return {"embedder_id": self.inner.id}

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> Any:
            return ChatHaruhiEmbeddingFunction(embedder)

    return ChatHaruhiEmbeddingFunction(embedder)


class ChromaIndex(SceneIndex):
    """``SceneIndex`` whose dense search runs in a persistent chromadb collection (the ``[chroma]`` extra).

    Vectors come from our embedder (and are stored in chromadb, which is their cache); the lexical
    score and near-duplicate filter are computed here over the candidates chromadb returns.
    """

    def __init__(self, scenes: Sequence[Scene], embedder: Embedder, path: str | os.PathLike, collection: str):
        try:
            import chromadb
        except ImportError as exc:
            raise EmbedderError("chromadb is not installed: pip install 'chatharuhi[chroma]'") from exc
        scenes = list(scenes)
        client = chromadb.PersistentClient(path=os.fspath(path))
        name = _safe(f"{collection}-{embedder.id}")[:60].strip("._-") or "scenes"
        self.collection = client.get_or_create_collection(
            name, embedding_function=_chroma_embedding_function(embedder), metadata={"hnsw:space": "cosine"})
        ids = [s.id for s in scenes]
        hashes = [s.content_hash for s in scenes]
        stored = self.collection.get(ids=ids, include=["metadatas", "embeddings"]) if ids else {"ids": []}
        have = {i: (m or {}).get("hash") for i, m in zip(stored["ids"], stored.get("metadatas") or [])}
        todo = [k for k, (i, h) in enumerate(zip(ids, hashes)) if have.get(i) != h]
        if todo:
            vecs = _embed(embedder, [scenes[k].text for k in todo], False, DEFAULT_EMBED_BATCH)
            self.collection.upsert(ids=[ids[k] for k in todo], embeddings=vecs,
                                   metadatas=[{"hash": hashes[k]} for k in todo])
        gone = [i for i in self.collection.get(include=[])["ids"] if i not in set(ids)]
        if gone:
            self.collection.delete(ids=gone)
        got = self.collection.get(ids=ids, include=["embeddings"]) if ids else {"ids": [], "embeddings": []}
        by_id = dict(zip(got["ids"], got["embeddings"]))
        vectors = np.array([by_id[i] for i in ids], dtype=np.float32).reshape(len(ids), embedder.dim)
        super().__init__(scenes, vectors, embedder)

    def search_vector(self, query_vector: np.ndarray, top_k: int = DEFAULT_TOP_K, *, text: str = "",
                      exclude: Collection[str] = (), dense_weight: float = DEFAULT_DENSE_WEIGHT,
                      lexical_weight: float = DEFAULT_LEXICAL_WEIGHT,
                      duplicate_threshold: float = DEFAULT_DUPLICATE_THRESHOLD, exact: bool = False) -> SearchResult:
        """Ask chromadb for the nearest candidates, then rank them as ``SceneIndex`` does."""
        n = len(self.scenes)
        if top_k <= 0 or n == 0:
            return SearchResult()
        want = min(n, (top_k + len(exclude)) * CANDIDATE_FACTOR)
        found = self.collection.query(query_embeddings=[np.asarray(query_vector, np.float32)], n_results=want,
                                      include=["distances"])
        keep = [self.positions[i] for i in found["ids"][0] if i in self.positions]
        sub = SceneIndex([self.scenes[k] for k in keep], self.vectors[keep], self.embedder)
        sub._bm25 = None if not (lexical_weight and text) else _SubBM25(self.bm25, keep)
        return sub.search_vector(query_vector, top_k, text=text, exclude=exclude, dense_weight=dense_weight,
                                 lexical_weight=lexical_weight, duplicate_threshold=duplicate_threshold, exact=True)


class _SubBM25:
    """The full index's BM25, normalised over all scenes, read at a subset of positions."""

    def __init__(self, bm25: BM25, positions: list[int]):
        self._bm25, self._positions = bm25, positions

    def normalized_scores(self, query: str) -> np.ndarray:
        return self._bm25.normalized_scores(query)[self._positions]
