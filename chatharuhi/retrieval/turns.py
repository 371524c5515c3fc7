"""A conversation's earlier turns as a searchable index: the same hybrid score as scenes, growing turn by turn.

The scene index is built once over a fixed set of texts; a conversation grows by one entry a turn and may be
cut back (undo, an edit). ``TurnIndex`` keeps unit vectors in a growing array and a small inverted index for
BM25 (the same tokens and constants as ``lexical.BM25``, scored at query time, so adding an entry costs one
tokenisation). An entry's vector is the query vector of its user message: the turn's own retrieval embedded it
already, and e5-style embedders compare two queries as well as a query and a passage.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from ..config import DEFAULT_DENSE_WEIGHT, DEFAULT_LEXICAL_WEIGHT, MEMORY_VECTOR_MEMO
from .lexical import BM25_B, BM25_K1, tokenize


@dataclass(frozen=True)
class TurnHit:
    """A recalled entry: its id, its rank score and the two scores it was made of."""

    id: str
    score: float
    dense: float
    lexical: float


class TurnIndex:
    """Entries (id, text, unit vector) in conversation order; ``search`` ranks them for a message."""

    def __init__(self, dim: int):
        self.dim = dim
        self.ids: list[str] = []
        self._vectors = np.zeros((16, dim), dtype=np.float32)
        self._lengths: list[int] = []
        self._postings: dict[str, list[tuple[int, int]]] = {}  # term -> (entry, term frequency), entries ascending
        self._total_length = 0

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def vectors(self) -> np.ndarray:
        """The entries' vectors, one row each (a view)."""
        return self._vectors[: len(self.ids)]

    def add(self, entry_id: str, text: str, vector: np.ndarray) -> None:
        """Append an entry (the newest turn)."""
        n = len(self.ids)
        if n == len(self._vectors):
            grown = np.zeros((2 * n, self.dim), dtype=np.float32)
            grown[:n] = self._vectors
            self._vectors = grown
        self._vectors[n] = np.asarray(vector, dtype=np.float32).reshape(self.dim)
        tokens = tokenize(text)
        for term, tf in Counter(tokens).items():
            self._postings.setdefault(term, []).append((n, tf))
        self.ids.append(entry_id)
        self._lengths.append(len(tokens))
        self._total_length += len(tokens)

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` entries (the conversation was cut back)."""
        if n >= len(self.ids):
            return
        for term in list(self._postings):
            kept = [p for p in self._postings[term] if p[0] < n]
            if kept:
                self._postings[term] = kept
            else:
                del self._postings[term]
        self._total_length = sum(self._lengths[:n])
        del self.ids[n:], self._lengths[n:]

    def lexical_scores(self, text: str) -> np.ndarray:
        """BM25 of every entry for ``text``, divided by the best (all 0 when nothing matches)."""
        n = len(self.ids)
        scores = np.zeros(n, dtype=np.float32)
        if n == 0:
            return scores
        avgdl = max(self._total_length / n, 1e-9)
        for term in set(tokenize(text)):
            postings = self._postings.get(term)
            if not postings:
                continue
            idf = math.log1p((n - len(postings) + 0.5) / (len(postings) + 0.5))
            for entry, tf in postings:
                norm = BM25_K1 * (1.0 - BM25_B + BM25_B * self._lengths[entry] / avgdl)
                scores[entry] += idf * tf * (BM25_K1 + 1.0) / (tf + norm)
        top = float(scores.max())
        return scores / top if top > 0 else scores

    def search(self, text: str, vector: np.ndarray | None, top_k: int, *, exclude: Collection[str] = (),
               dense_weight: float = DEFAULT_DENSE_WEIGHT,
               lexical_weight: float = DEFAULT_LEXICAL_WEIGHT) -> list[TurnHit]:
        """The ``top_k`` best entries for a message (its text and query vector), best first; ties go to the newer."""
        n = len(self.ids)
        if n == 0 or top_k <= 0:
            return []
        dense = self.vectors @ np.asarray(vector, dtype=np.float32) if vector is not None and dense_weight \
            else np.zeros(n, dtype=np.float32)
        lexical = self.lexical_scores(text) if lexical_weight and text else np.zeros(n, dtype=np.float32)
        score = dense * dense_weight + lexical * lexical_weight
        if exclude:
            excluded = set(exclude)
            score[[i for i, e in enumerate(self.ids) if e in excluded]] = -np.inf
        order = np.lexsort((-np.arange(n), -score))
        hits = []
        for i in order[:top_k].tolist():
            if not np.isfinite(score[i]):
                break
            hits.append(TurnHit(self.ids[i], float(score[i]), float(dense[i]), float(lexical[i])))
        return hits


class VectorMemo:
    """Query vectors by (embedder id, text), least recently used out: a turn's message is embedded once, whether
    its own retrieval or a later turn's memory needs it (thread-safe)."""

    def __init__(self, size: int = MEMORY_VECTOR_MEMO):
        from collections import OrderedDict

        self.size = size
        self._items: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, embedder_id: str, text: str) -> np.ndarray | None:
        """The remembered vector, or None."""
        with self._lock:
            vector = self._items.get((embedder_id, text))
            if vector is not None:
                self._items.move_to_end((embedder_id, text))
            return vector

    def put(self, embedder_id: str, text: str, vector: np.ndarray) -> None:
        """Remember a vector."""
        with self._lock:
            self._items[(embedder_id, text)] = vector
            self._items.move_to_end((embedder_id, text))
            while len(self._items) > self.size:
                self._items.popitem(last=False)


query_vectors = VectorMemo()


def embed_queries(embedder: object, texts: Sequence[str]) -> np.ndarray:
    """Query vectors for ``texts``, from the memo where it has them (the rest embedded and remembered)."""
    out = np.zeros((len(texts), embedder.dim), dtype=np.float32)  # type: ignore[attr-defined]
    for i, text in enumerate(texts):
        vector = query_vectors.get(embedder.id, text)  # type: ignore[attr-defined]
        if vector is None:
            vector = np.asarray(embedder.embed_query(text), dtype=np.float32)  # type: ignore[attr-defined]
            query_vectors.put(embedder.id, text, vector)  # type: ignore[attr-defined]
        out[i] = vector
    return out


# -- a message's vector as a session stores it ------------------------------------------------------------
def key_hash(text: str) -> str:
    """The stored name of a message's vector."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def vector_bytes(vector: np.ndarray) -> bytes:
    """A vector as it is stored (little-endian float32)."""
    return np.asarray(vector, dtype="<f4").tobytes()


def read_vector(blob: bytes, dim: int) -> np.ndarray | None:
    """A stored vector, or None when the row is damaged (wrong size, not finite, not of unit length)."""
    if not isinstance(blob, (bytes, bytearray, memoryview)) or len(blob) != 4 * dim:
        return None
    vector = np.frombuffer(bytes(blob), dtype="<f4").astype(np.float32)
    if not np.isfinite(vector).all():
        return None
    norm = float(np.linalg.norm(vector))
    return vector if norm == 0.0 or abs(norm - 1.0) < 1e-3 else None
