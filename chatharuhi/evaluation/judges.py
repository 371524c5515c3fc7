"""The identity and voice judges, fitted on characters' lines minus the scenes a case comes from.

A judge that saw the case's own scene has seen its true reply: a reply that copies that line, or a
model that memorised it, would be attributed to the character for free. So each case is judged by
judges fitted without its excluded scenes (leave-one-scene-out: the source scene plus any scene
holding the answer verbatim, the same scenes retrieval may not use), and the benchmarks that hold out
whole validation scenes fit them once on the training scenes (``judge_lines(character, held_out)``).

``Judges`` embeds and counts every line once; ``fit(exclude)`` then drops the excluded scenes' lines
by subtraction (the centroid is the mean of the remaining vectors, the voice model's n-gram counts
lose those lines' counts), so a per-case fit costs no embedding and no recounting.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..character.folder import Character
from . import metrics
from .cases import is_meaningful
from .voice import SMOOTHING, VoiceModel, ngrams


def own_lines(character: Character) -> list[tuple[str, str]]:
    """(scene id, text) of every non-empty line the character speaks."""
    sp = character.speaker
    return [(s.id, ln.text.strip()) for s in character.scenes for ln in s.lines
            if ln.kind == "speech" and ln.speaker == sp and ln.text.strip()]


def judge_lines(character: Character, exclude: Collection[str] = ()) -> list[tuple[str, str]]:
    """(scene id, text) of the character's meaningful lines outside the scenes ``exclude``: what a judge may
    be fitted on when those scenes are being evaluated."""
    return [(s, t) for s, t in own_lines(character) if s not in exclude and is_meaningful(t, character.language)]


@dataclass(frozen=True)
class Fitted:
    """Judges fitted for one case: each character's identity centroid and the voice model (None: < 2 characters)."""

    centroids: dict[str, np.ndarray]
    voice: VoiceModel | None


class Judges:
    """Every judged character's lines (sampled to ``max_lines`` distinct texts), embedded and counted once."""

    def __init__(self, characters: Sequence[Character], embed: Callable[[list[str]], np.ndarray],
                 max_lines: int | None, seed: int = 0):
        self.names: list[str] = []
        self._scenes: dict[str, list[frozenset[str]]] = {}  # per text: the scenes it is spoken in
        self._vectors: dict[str, np.ndarray] = {}
        self._grams: dict[str, list[Counter]] = {}
        self._totals: dict[str, Counter] = {}
        self._cache: dict[tuple, Fitted] = {}
        for character in characters:
            where: dict[str, set[str]] = {}
            for scene, text in judge_lines(character):
                where.setdefault(text, set()).add(scene)
            texts = sorted(where)
            rng = random.Random(f"centroid:{seed}:{character.name}")
            if max_lines is not None and len(texts) > max_lines:
                texts = rng.sample(texts, max_lines)
            if not texts:
                continue
            name = character.name
            self.names.append(name)
            self._scenes[name] = [frozenset(where[t]) for t in texts]
            self._vectors[name] = np.asarray(embed(texts), dtype=np.float32)
            self._grams[name] = [ngrams(t) for t in texts]
            self._totals[name] = sum(self._grams[name], Counter())

    def lines(self, name: str, exclude: Collection[str] = ()) -> list[int]:
        """Indices of ``name``'s judge lines spoken outside ``exclude`` (a line also spoken elsewhere stays)."""
        ex = frozenset(exclude)
        return [i for i, scenes in enumerate(self._scenes[name]) if not scenes <= ex]

    def fit(self, exclude: Mapping[str, Collection[str]] | None = None) -> Fitted:
        """The judges without the scenes ``exclude[name]`` of each character ``name``."""
        exclude = {k: frozenset(v) for k, v in (exclude or {}).items() if k in self._scenes and v}
        key = tuple(sorted(exclude.items()))
        if key in self._cache:
            return self._cache[key]
        centroids, counts = {}, {}
        for name in self.names:
            kept = self.lines(name, exclude.get(name, ()))
            if not kept:
                continue
            if len(kept) == len(self._scenes[name]):
                centroids[name], counts[name] = metrics.centroid(self._vectors[name]), self._totals[name]
                continue
            centroids[name] = metrics.centroid(self._vectors[name][kept])
            dropped = set(range(len(self._scenes[name]))) - set(kept)
            total = Counter(self._totals[name])
            for i in dropped:
                total.subtract(self._grams[name][i])
            counts[name] = +total  # drops the n-grams that only the excluded lines had
        voice = VoiceModel.from_counts(counts, SMOOTHING) if len(counts) > 1 else None
        fitted = Fitted(centroids, voice)
        if len(self._cache) < 4096:
            self._cache[key] = fitted
        return fitted
