"""Bootstrap intervals for evaluation means and for paired differences between configurations.

Cases are resampled within each character (a stratified bootstrap), so a pooled mean keeps every
character's share of the cases in every resample. A paired difference is the mean over cases of
(score under A − score under B) for the same case: the case's own difficulty cancels, so it is much
tighter than the difference of two unpaired means. An interval that excludes 0 is what the docs call a
real difference. Reading many such intervals at once, some exclude 0 by chance: ``sign_flip`` gives a
paired difference's two-sided permutation p-value and ``holm`` adjusts a family of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..config import EVAL_BOOTSTRAP

LEVEL = 0.95


def bootstrap(groups: Mapping[str, Sequence[float]] | Sequence[float], resamples: int = EVAL_BOOTSTRAP,
              seed: int = 0) -> dict[str, float] | None:
    """``{"mean", "low", "high", "n"}``: the pooled mean of the values and its 95 % percentile interval, the
    values resampled with replacement within each group (a plain sequence is one group); None when empty."""
    parts = [np.asarray(v, dtype=float) for v in (groups.values() if isinstance(groups, Mapping) else [groups])]
    parts = [p for p in parts if len(p)]
    if not parts:
        return None
    rng = np.random.default_rng(seed)
    n = sum(len(p) for p in parts)
    sums = np.zeros(resamples)
    for p in parts:
        sums += p[rng.integers(0, len(p), size=(resamples, len(p)))].sum(axis=1)
    means = sums / n
    tail = (1 - LEVEL) / 2 * 100
    mean = float(np.concatenate(parts).mean())
    return {"mean": round(mean, 4), "low": round(float(np.percentile(means, tail)), 4),
            "high": round(float(np.percentile(means, 100 - tail)), 4), "n": n}


def paired(a: Mapping[tuple[str, str], float], b: Mapping[tuple[str, str], float], resamples: int = EVAL_BOOTSTRAP,
           seed: int = 0) -> dict[str, float] | None:
    """The mean of ``a − b`` over the (character, case) keys both have, with its stratified 95 % interval."""
    groups: dict[str, list[float]] = {}
    for key in sorted(set(a) & set(b)):
        groups.setdefault(key[0], []).append(a[key] - b[key])
    return bootstrap(groups, resamples, seed)


def sign_flip(a: Mapping[tuple[str, str], float], b: Mapping[tuple[str, str], float], resamples: int = 20000,
              seed: int = 0) -> float | None:
    """Two-sided p-value of the mean paired difference ``a − b``: how often flipping the sign of each case's
    difference at random gives a mean at least as far from 0 (None without common cases)."""
    diffs = np.asarray([a[k] - b[k] for k in sorted(set(a) & set(b))], dtype=float)
    if not len(diffs):
        return None
    observed = abs(diffs.mean())
    if observed == 0:
        return 1.0
    signs = np.random.default_rng(seed).choice((-1.0, 1.0), size=(resamples, len(diffs)))
    return float(((np.abs((signs * diffs).mean(axis=1)) >= observed - 1e-12).sum() + 1) / (resamples + 1))


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm–Bonferroni adjusted p-values of a family of tests (keys kept)."""
    ordered = sorted(pvalues.items(), key=lambda kv: kv[1])
    out, running = {}, 0.0
    for i, (key, p) in enumerate(ordered):
        running = max(running, min(1.0, p * (len(ordered) - i)))
        out[key] = round(running, 4)
    return out


def excludes_zero(interval: Mapping[str, float] | None) -> bool:
    """Whether a 95 % interval lies wholly above or wholly below 0."""
    return interval is not None and (interval["low"] > 0 or interval["high"] < 0)


def cell(interval: Mapping[str, float] | None, signed: bool = False) -> str:
    """``0.612 [0.540, 0.680]`` (``+0.050 [...]`` signed), ``–`` for none."""
    if interval is None:
        return "–"
    f = "{:+.3f}" if signed else "{:.3f}"
    text = f"{f.format(interval['mean'])} [{f.format(interval['low'])}, {f.format(interval['high'])}]"
    return f"**{text}**" if signed and excludes_zero(interval) else text
