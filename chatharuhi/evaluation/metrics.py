"""Judge-free scores: answer support, key-term recall, cosine, ROUGE-L, character identity and rule checks.

Every score is a pure function of its inputs (texts and vectors); ``LineVectors`` embeds short texts
with the run's embedder and keeps them in a disk cache, so a second run embeds nothing.

Definitions (docs/evaluation.md repeats them):

- ``answer_support``: the best cosine between the original answer and any line the character speaks
  in the scenes put in the prompt. No scenes gives 0.0 (nothing supports the answer).
- ``key_term_recall``: the answer's key terms are its ``KEY_TERMS`` rarest terms (CJK bigrams and
  latin words of 3+ letters, by document frequency over the character's scenes) that occur in some
  other scene but in at most ``KEY_TERM_MAX_DF`` of the scenes; the relevant scenes are the other
  scenes holding any key term; recall = relevant scenes in the prompt / min(scenes in the prompt,
  relevant scenes). ``None`` when the answer has no key term.
- ``cosine``: cosine between the generated and the original line (ChatHaruhi's planned metric).
- ``rouge_l``: ROUGE-L F1 over characters for Chinese (punctuation and spaces dropped), over
  lowercased words for English (the RoleBench convention).
- ``identity``: 1.0 when the reply's vector is closer to this character's centroid than to every other
  character's centroid, else 0.0 (``None`` without other characters to compare with).
- rule checks: non-empty, language matches, no line spoken as another speaker or the user, length within
  ``MAX_REPLY_CJK_CHARS`` / ``MAX_REPLY_WORDS``; ``rule_pass`` when all hold.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ..character.folder import detect_language
from ..config import MAX_SPEAKER_CHARS, cache_dir
from ..retrieval.embeddings import Embedder
from ..retrieval.lexical import tokenize
from .cases import text_units

KEY_TERMS = 3  # key terms per answer
KEY_TERM_MAX_DF = 0.1  # a term in more than this share of the scenes is too common to be "key"
KEY_TERM_MIN_DF = 2  # ... and one in fewer other scenes than this is likely an accidental CJK bigram
MAX_REPLY_CJK_CHARS = 300  # a Chinese reply longer than this breaks the length rule
MAX_REPLY_WORDS = 200  # an English reply longer than this breaks the length rule
MIN_REPLY_UNITS = 1  # a reply with no CJK character / word (only punctuation) breaks the length rule

_CJK_RANGES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK_CHAR = re.compile(f"[{_CJK_RANGES}]")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")  # "it's" is one word
_ZH_UNIT = re.compile(f"[{_CJK_RANGES}]|[^\\W_{_CJK_RANGES}]+")  # one CJK character, or a latin/digit word
_TAG = re.compile(rf"^\s*(?P<name>[^:：「」\n]{{1,{MAX_SPEAKER_CHARS}}}?)\s*[:：]")


# -- text overlap ----------------------------------------------------------------------------------------
def rouge_tokens(text: str, language: str) -> list[str]:
    """ROUGE units: each CJK character and latin word for Chinese; lowercased words for English."""
    if language.startswith("zh"):
        return [u.lower() for u in _ZH_UNIT.findall(text)]
    return [w.lower() for w in _WORD.findall(text)]


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(candidate: str, reference: str, language: str) -> float:
    """ROUGE-L F1 (beta 1) between a generated and a reference line; 0.0 when either has no units."""
    c, r = rouge_tokens(candidate, language), rouge_tokens(reference, language)
    if not c or not r:
        return 0.0
    lcs = _lcs(c, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(c), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


# -- vectors -----------------------------------------------------------------------------------------------
def cosine(u: np.ndarray, v: np.ndarray) -> float:
    """Cosine similarity of two vectors (0.0 if either is zero)."""
    nu, nv = float(np.linalg.norm(u)), float(np.linalg.norm(v))
    return float(np.dot(u, v) / (nu * nv)) if nu and nv else 0.0


def answer_support(answer: np.ndarray, lines: np.ndarray | None) -> float:
    """Best cosine between the answer and the character's lines in the prompt's scenes (0.0 for none)."""
    if lines is None or len(lines) == 0:
        return 0.0
    return float(np.max(lines @ answer))


def centroid(vectors: np.ndarray) -> np.ndarray:
    """The unit mean of unit vectors."""
    mean = np.asarray(vectors, dtype=np.float32).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm else mean


def identity(reply: np.ndarray, own: np.ndarray, others: Mapping[str, np.ndarray]) -> tuple[float | None, float | None]:
    """(1.0 if the reply is nearer its own centroid than every other one else 0.0, the cosine margin)."""
    if not others:
        return None, None
    margin = cosine(reply, own) - max(cosine(reply, c) for c in others.values())
    return (1.0 if margin > 0 else 0.0), margin


class LineVectors:
    """Embeds short texts (lines, replies) as documents, cached on disk by text hash per embedder."""

    def __init__(self, embedder: Embedder, cache: bool = True):
        self.embedder = embedder
        self._vectors: dict[str, np.ndarray] = {}
        name = re.sub(r"[^\w.-]+", "_", embedder.id).strip("._") or "embedder"
        self.path = cache_dir("eval", "lines") / f"{name}.npz" if cache else None
        self._dirty = False
        if self.path is not None and self.path.exists():
            try:
                with np.load(self.path, allow_pickle=False) as data:
                    keys, vectors = data["keys"], data["vectors"]
                if vectors.shape != (len(keys), embedder.dim):
                    raise ValueError(f"shape {vectors.shape} for {len(keys)} keys, dim {embedder.dim}")
                self._vectors = {str(k): v for k, v in zip(keys, vectors.astype(np.float32))}
            except Exception as exc:  # noqa: BLE001 - a bad cache is rebuilt
                warnings.warn(f"ignoring line-vector cache {self.path}: {exc}", RuntimeWarning, stacklevel=2)

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def embed(self, texts: Sequence[str], progress: bool = False, desc: str = "embedding lines") -> np.ndarray:
        """Unit vectors for ``texts`` (shape ``(len(texts), dim)``), embedding only the uncached ones."""
        keys = [self._key(t) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self._vectors))
        if missing:
            by_key = {k: t for k, t in zip(keys, texts)}
            todo = [by_key[k] for k in missing]
            bar = None
            if progress and len(todo) > 64:
                from tqdm import tqdm

                bar = tqdm(total=len(todo), desc=desc, unit="line")
            step = 64
            for start in range(0, len(todo), step):
                out = np.asarray(self.embedder.embed_documents(todo[start : start + step]), dtype=np.float32)
                for k, v in zip(missing[start : start + step], out):
                    self._vectors[k] = v
                if bar is not None:
                    bar.update(len(out))
            if bar is not None:
                bar.close()
            self._dirty = True
        if not keys:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        return np.stack([self._vectors[k] for k in keys])

    def save(self) -> None:
        """Write the cache (atomically) if anything new was embedded; failure only warns."""
        if self.path is None or not self._dirty:
            return
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, keys=np.array(list(self._vectors), dtype="U64"),
                         vectors=np.stack(list(self._vectors.values())).astype(np.float32))
            os.replace(tmp, self.path)
            self._dirty = False
        except OSError as exc:
            warnings.warn(f"could not write line-vector cache {self.path}: {exc}", RuntimeWarning, stacklevel=2)
            if tmp and os.path.exists(tmp):
                os.unlink(tmp)


# -- key terms -----------------------------------------------------------------------------------------------
def _key_candidates(text: str) -> set[str]:
    """CJK bigrams and latin words of 3+ letters: single CJK characters are too ambiguous to be key terms."""
    return {t for t in tokenize(text) if (len(t) == 2 and _CJK_CHAR.match(t)) or (len(t) >= 3 and t.isascii())}


class KeyTerms:
    """Document frequencies over a character's scenes, to find an answer's key terms and the scenes sharing them."""

    def __init__(self, scenes: Iterable[tuple[str, str]]):
        self.terms: dict[str, set[str]] = {}
        self.ids: list[str] = []
        for scene_id, text in scenes:
            self.ids.append(scene_id)
            self.terms[scene_id] = _key_candidates(text)
        self.df: dict[str, int] = {}
        for terms in self.terms.values():
            for t in terms:
                self.df[t] = self.df.get(t, 0) + 1

    def key_terms(self, answer: str, exclude: Iterable[str] = (), n: int = KEY_TERMS) -> list[str]:
        """The answer's ``n`` rarest terms that occur in a scene outside ``exclude`` and are not too common."""
        exclude = set(exclude)
        limit = max(1, math.floor(KEY_TERM_MAX_DF * len(self.ids)))
        held = {t: sum(t in self.terms[s] for s in exclude if s in self.terms) for t in _key_candidates(answer)}
        usable = [t for t, inside in held.items()
                  if self.df.get(t, 0) - inside >= KEY_TERM_MIN_DF and self.df.get(t, 0) <= limit]
        return sorted(usable, key=lambda t: (self.df[t], t))[:n]

    def relevant(self, terms: Sequence[str], exclude: Iterable[str] = ()) -> set[str]:
        """Scenes outside ``exclude`` holding any of ``terms``."""
        exclude, wanted = set(exclude), set(terms)
        return {s for s in self.ids if s not in exclude and self.terms[s] & wanted}


def key_term_recall(retrieved: Sequence[str], relevant: set[str]) -> float | None:
    """Relevant scenes in the prompt / min(scenes in the prompt, relevant scenes); ``None`` with no relevant scene."""
    if not relevant:
        return None
    if not retrieved:
        return 0.0
    return len(relevant.intersection(retrieved)) / min(len(retrieved), len(relevant))


# -- rules ---------------------------------------------------------------------------------------------------
def rule_checks(reply: str, language: str, own_names: Iterable[str], other_names: Iterable[str]) -> dict[str, bool]:
    """The four rule checks of a generated reply; ``rule_pass`` is their conjunction (see the module doc)."""
    own = {n.strip().casefold() for n in own_names if n.strip()}
    others = {n.strip().casefold() for n in other_names if n.strip()} - own
    text = reply.strip()
    units = text_units(text, language)
    maximum = MAX_REPLY_CJK_CHARS if language.startswith("zh") else MAX_REPLY_WORDS
    speaks_as_other = False
    for line in text.split("\n"):
        m = _TAG.match(line)
        if m and m["name"].strip().casefold() in others:
            speaks_as_other = True
    checks = {
        "non_empty": bool(text),
        "language": bool(text) and detect_language(text) == ("zh" if language.startswith("zh") else "en")
        and (units > 0),
        "own_voice": not speaks_as_other,
        "length": MIN_REPLY_UNITS <= units <= maximum,
    }
    checks["rule_pass"] = all(checks.values())
    return checks
