"""Scene vectors in PostgreSQL (the index's ``VectorCache``): every replica shares one embedding of each scene.

Vectors are float32 bytes keyed by (embedder id, scene content hash), read into memory and searched in
process like the file cache's, so no database extension (pgvector) is needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import SessionError

if TYPE_CHECKING:
    from ..retrieval.embeddings import Embedder
    from .pg_schema import Database


class PostgresVectorCache:
    """The ``index.VectorCache`` of a PostgreSQL store."""

    def __init__(self, db: "Database"):
        self.db = db

    def load(self, embedder: "Embedder", hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors among ``hashes``; a vector of another size is a damaged row and an error."""
        with self.db.transaction("read scene vectors") as conn:
            rows = conn.execute("SELECT hash, dim, vector FROM scene_vectors WHERE embedder_id = %s AND hash = ANY(%s)",
                                (embedder.id, list(dict.fromkeys(hashes)))).fetchall()
        out = {}
        for r in rows:
            vector = np.frombuffer(bytes(r["vector"]), dtype="<f4")
            if r["dim"] != embedder.dim or vector.shape != (embedder.dim,):
                raise SessionError(f"scene vector {r['hash']} of embedder {embedder.id!r} in {self.db.where} has "
                                   f"{vector.shape[0]} values, not {embedder.dim}: delete its rows to re-embed")
            out[r["hash"]] = vector.astype(np.float32)
        return out

    def save(self, embedder: "Embedder", hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Store new vectors; one another replica stored first is kept (same scene, same embedder)."""
        rows = [(embedder.id, h, embedder.dim, np.asarray(v, dtype="<f4").tobytes()) for h, v in zip(hashes, vectors)]
        with self.db.transaction("store scene vectors") as conn:
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO scene_vectors (embedder_id, hash, dim, vector) VALUES (%s, %s, %s, %s) "
                                "ON CONFLICT (embedder_id, hash) DO NOTHING", rows)
