"""A judge-free voice score: which character a line sounds like, from character n-grams.

``VoiceModel`` is a multinomial naive Bayes over character 1–3-grams (inside a line, lowercased,
whitespace collapsed), one class per character, trained on the characters' own lines. ``scores``
gives each character's log-posterior for a text; ``log_odds(text, name)`` is how much more likely
``name`` is than the best other character (> 0: attributed to ``name``). It needs no model call and
no embedder, and it works for Chinese and English alike.

``separation`` measures whether a score can tell characters apart on held-out lines: per character,
accuracy (its own held-out lines attributed to it, argmax over characters) and AUC (a random own line
outscores a random other character's line). A metric that cannot recognise real lines cannot judge
generated ones.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

NGRAMS = (1, 2, 3)
SMOOTHING = 0.001  # additive (Lidstone) smoothing; 0.1 sent every English line to the character with most text
_SPACE = re.compile(r"\s+")


def ngrams(text: str, sizes: Sequence[int] = NGRAMS) -> Counter:
    """Character n-gram counts of ``text`` (lowercased, whitespace collapsed)."""
    text = _SPACE.sub(" ", text.lower()).strip()
    return Counter(text[i:i + n] for n in sizes for i in range(len(text) - n + 1))


class VoiceModel:
    """Multinomial naive Bayes over character n-grams; one class per character (uniform prior)."""

    def __init__(self, lines: Mapping[str, Sequence[str]], alpha: float = SMOOTHING):
        if len(lines) < 2:
            raise ValueError("a voice model needs the lines of at least two characters")
        self.names = sorted(lines)
        self.counts = {name: sum((ngrams(t) for t in lines[name]), Counter()) for name in self.names}
        vocabulary = set().union(*self.counts.values())
        self.alpha, self.vocabulary = alpha, len(vocabulary) + 1  # + 1: the unseen n-gram
        self.totals = {name: sum(c.values()) for name, c in self.counts.items()}

    @classmethod
    def from_counts(cls, counts: Mapping[str, Counter], alpha: float = SMOOTHING) -> "VoiceModel":
        """A model from n-gram counts per character (e.g. counts with some lines subtracted; see judges.py)."""
        if len(counts) < 2:
            raise ValueError("a voice model needs the lines of at least two characters")
        model = cls.__new__(cls)
        model.names = sorted(counts)
        model.counts = {name: counts[name] for name in model.names}
        model.alpha, model.vocabulary = alpha, len(set().union(*model.counts.values())) + 1
        model.totals = {name: sum(c.values()) for name, c in model.counts.items()}
        return model

    def scores(self, text: str) -> dict[str, float]:
        """Log-posterior of each character for ``text`` (per n-gram, so long and short lines compare)."""
        grams = ngrams(text)
        n = sum(grams.values()) or 1
        raw = {}
        for name in self.names:
            counts, denominator = self.counts[name], self.totals[name] + self.alpha * self.vocabulary
            raw[name] = sum(k * math.log((counts.get(g, 0) + self.alpha) / denominator) for g, k in grams.items()) / n
        top = max(raw.values())
        norm = top + math.log(sum(math.exp(v - top) for v in raw.values()))
        return {name: v - norm for name, v in raw.items()}

    def log_odds(self, text: str, name: str) -> float:
        """``name``'s log-posterior minus the best other character's (> 0: the text sounds like ``name``)."""
        s = self.scores(text)
        return s[name] - max(v for k, v in s.items() if k != name)

    def attribute(self, text: str) -> str:
        """The character ``text`` sounds most like."""
        s = self.scores(text)
        return max(s, key=s.get)


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """P(a random positive outscores a random negative), ties counted half (Mann–Whitney)."""
    if not positives or not negatives:
        return None
    ranked = sorted([(v, 1) for v in positives] + [(v, 0) for v in negatives])
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        mean_rank = (i + j + 1) / 2  # 1-based average rank of the tie group
        rank_sum += mean_rank * sum(flag for _, flag in ranked[i:j])
        i = j
    n_pos, n_neg = len(positives), len(negatives)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def separation(held_out: Mapping[str, Sequence[str]], score: Callable[[str], Mapping[str, float]],
               within: Mapping[str, set[str]] | None = None) -> dict[str, dict]:
    """Per character: ``n`` held-out lines, ``accuracy`` (argmax attribution) and ``auc`` of its own score
    against every other character's lines (``within``: against only these characters' lines, e.g. the
    same language)."""
    scored = {name: [score(t) for t in texts] for name, texts in held_out.items()}
    out = {}
    for name, rows in scored.items():
        if not rows:
            continue
        rivals = within[name] if within is not None else set(held_out) - {name}

        def margin(s: Mapping[str, float], who: str = name) -> float:
            return s[who] - max(v for k, v in s.items() if k != who)

        negatives = [margin(s) for other in rivals if other != name for s in scored.get(other, [])]
        out[name] = {"n": len(rows), "accuracy": sum(max(s, key=s.get) == name for s in rows) / len(rows),
                     "auc": auc([margin(s) for s in rows], negatives)}
    return out
