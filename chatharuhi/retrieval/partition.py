"""A coarse partition (IVF) of a large scene index, so one search reads a tenth of the vectors.

Below ``PARTITION_MIN_SCENES`` scenes the index is searched exactly (a full matrix-vector product
is faster than anything cleverer). Above it, the vectors are clustered once with a few seeded
k-means rounds on a sample, and a query scores only the rows of its ``n_probe`` nearest clusters.
This is approximate: a near scene in an unprobed cluster can be missed (benchmarks report recall
against the exact search); pass ``exact=True`` to ``search`` to search everything.
"""

from __future__ import annotations

import numpy as np

PARTITION_MIN_SCENES = 20_000  # exact search below this many scenes
PROBE_FRACTION = 0.1  # share of clusters a query reads
KMEANS_ROUNDS = 6
KMEANS_SAMPLE = 20_000
ASSIGN_CHUNK = 8192


class Partition:
    """Clusters of row numbers around unit centroids; ``probe`` returns the rows worth scoring."""

    def __init__(self, vectors: np.ndarray, n_clusters: int | None = None, seed: int = 0):
        n = len(vectors)
        k = max(1, min(n, n_clusters or int(np.sqrt(n))))
        rng = np.random.default_rng(seed)
        sample = vectors[np.sort(rng.choice(n, min(n, KMEANS_SAMPLE), replace=False))]
        centroids = sample[rng.choice(len(sample), k, replace=False)].copy()
        for _ in range(KMEANS_ROUNDS):
            assign = np.argmax(sample @ centroids.T, axis=1)
            sums = np.zeros_like(centroids)
            np.add.at(sums, assign, sample)
            filled = np.bincount(assign, minlength=k) > 0  # an empty cluster keeps its old centroid
            centroids[filled] = sums[filled]
            centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        assign = np.concatenate([np.argmax(vectors[i : i + ASSIGN_CHUNK] @ centroids.T, axis=1)
                                 for i in range(0, n, ASSIGN_CHUNK)])
        self.centroids = centroids.astype(np.float32)
        self.order = np.argsort(assign, kind="stable")
        self.offsets = np.searchsorted(assign[self.order], np.arange(k + 1))
        # A copy sorted by cluster: a probe reads contiguous slices instead of gathering scattered rows
        # (measured here: 10k scattered rows cost as much as a full pass over 100k).
        self.sorted_vectors = np.ascontiguousarray(vectors[self.order], dtype=np.float32)

    @property
    def n_clusters(self) -> int:
        """How many clusters the vectors were split into."""
        return len(self.centroids)

    def probe(self, query_vector: np.ndarray, n_probe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Row numbers in the ``n_probe`` clusters nearest to the query (a tenth by default) and their cosines."""
        k = self.n_clusters
        n_probe = min(k, n_probe or max(1, int(np.ceil(k * PROBE_FRACTION))))
        near = np.argpartition(-(self.centroids @ query_vector), n_probe - 1)[:n_probe]
        spans = [(self.offsets[c], self.offsets[c + 1]) for c in near]
        rows = np.concatenate([self.order[lo:hi] for lo, hi in spans])
        scores = np.concatenate([self.sorted_vectors[lo:hi] @ query_vector for lo, hi in spans])
        return rows, scores
