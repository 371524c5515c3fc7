"""The lexical scorer: BM25 over CJK unigrams + bigrams and lowercased latin/digit words.

Chinese has no spaces, so a CJK run is indexed as its characters and its adjacent pairs
("春日" -> 春, 日, 春日); a query naming a person or a place then matches exactly. The inverted
index is built once into flat numpy arrays, and a query is one ``np.bincount`` over the postings of
its terms, so scoring stays in the low milliseconds for 100k documents.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

BM25_K1 = 1.5  # term-frequency saturation
BM25_B = 0.75  # document-length normalisation

# Han (incl. extension A and compatibility), kana and hangul count as "CJK": one token per character.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN_RE = re.compile(f"([{_CJK}]+)|([^\\W_{_CJK}]+)")


def tokenize(text: str) -> list[str]:
    """Split text into CJK unigrams and bigrams and lowercased latin/digit words."""
    tokens: list[str] = []
    for cjk, word in _TOKEN_RE.findall(text):
        if cjk:
            tokens.extend(cjk)
            tokens.extend(cjk[i : i + 2] for i in range(len(cjk) - 1))
        else:
            tokens.append(word.lower())
    return tokens


class BM25:
    """Okapi BM25 over a fixed list of documents; ``scores(query)`` gives one score per document."""

    def __init__(self, texts: Iterable[str], k1: float = BM25_K1, b: float = BM25_B):
        self.k1 = k1
        self.b = b
        vocab: dict[str, int] = {}
        term_ids: list[int] = []
        doc_ids: list[int] = []
        lengths: list[int] = []
        for doc, text in enumerate(texts):
            tokens = tokenize(text)
            lengths.append(len(tokens))
            term_ids.extend(vocab.setdefault(t, len(vocab)) for t in tokens)
            doc_ids.extend([doc] * len(tokens))
        self.n_docs = len(lengths)
        self._vocab = vocab
        n_terms = len(vocab)
        if not term_ids:
            self._indptr = np.zeros(n_terms + 1, dtype=np.int64)
            self._docs = np.zeros(0, dtype=np.int32)
            self._weights = np.zeros(0, dtype=np.float32)
            self._idf = np.zeros(n_terms, dtype=np.float32)
            return
        # One posting per distinct (term, doc) pair, sorted by term: a CSR matrix in three arrays.
        key = np.asarray(term_ids, dtype=np.int64) * self.n_docs + np.asarray(doc_ids, dtype=np.int64)
        pairs, tf = np.unique(key, return_counts=True)
        terms = pairs // self.n_docs
        docs = (pairs % self.n_docs).astype(np.int32)
        df = np.bincount(terms, minlength=n_terms)
        self._indptr = np.concatenate(([0], np.cumsum(df))).astype(np.int64)
        self._docs = docs
        dl = np.asarray(lengths, dtype=np.float64)
        avgdl = max(dl.mean(), 1e-9)
        tf = tf.astype(np.float64)
        # The per-posting part of BM25 does not depend on the query: precompute it once.
        norm = k1 * (1.0 - b + b * dl[docs] / avgdl)
        self._weights = (tf * (k1 + 1.0) / (tf + norm)).astype(np.float32)
        self._idf = np.log1p((self.n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)

    def __len__(self) -> int:
        return self.n_docs

    def idf(self, term: str) -> float:
        """Inverse document frequency of a term (0.0 for an unknown term)."""
        tid = self._vocab.get(term)
        return float(self._idf[tid]) if tid is not None else 0.0

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for ``query``: shape ``(n_docs,)``, float32, >= 0."""
        tids = sorted({self._vocab[t] for t in tokenize(query) if t in self._vocab})
        if not tids:
            return np.zeros(self.n_docs, dtype=np.float32)
        if len(tids) == 1:
            lo, hi = self._indptr[tids[0]], self._indptr[tids[0] + 1]
            out = np.zeros(self.n_docs, dtype=np.float32)
            out[self._docs[lo:hi]] = self._weights[lo:hi] * self._idf[tids[0]]
            return out
        spans = [(self._indptr[t], self._indptr[t + 1]) for t in tids]
        docs = np.concatenate([self._docs[lo:hi] for lo, hi in spans])
        weights = np.concatenate([self._weights[lo:hi] * self._idf[t] for t, (lo, hi) in zip(tids, spans)])
        return np.bincount(docs, weights=weights, minlength=self.n_docs).astype(np.float32)

    def normalized_scores(self, query: str) -> np.ndarray:
        """BM25 scores divided by their maximum, so the best document scores 1.0 (all 0 if none match)."""
        s = self.scores(query)
        top = float(s.max()) if s.size else 0.0
        return s / top if top > 0 else s

