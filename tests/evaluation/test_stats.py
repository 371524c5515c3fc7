"""Bootstrap intervals and paired differences of the evaluation summary."""

from __future__ import annotations

import numpy as np

from chatharuhi.evaluation.report import markdown, summarize
from chatharuhi.evaluation.stats import bootstrap, cell, excludes_zero, paired


def test_bootstrap_interval_holds_the_mean_and_narrows_with_more_cases():
    rng = np.random.default_rng(1)
    small = bootstrap(list(rng.integers(0, 2, 20)))
    large = bootstrap(list(rng.integers(0, 2, 2000)))
    for b in (small, large):
        assert b["low"] <= b["mean"] <= b["high"]
    assert large["high"] - large["low"] < (small["high"] - small["low"]) / 4
    assert bootstrap([0.5] * 10) == {"mean": 0.5, "low": 0.5, "high": 0.5, "n": 10}
    assert bootstrap([]) is None and bootstrap({}) is None


def test_the_bootstrap_resamples_within_each_character():
    # a always 1, b always 0: a stratified resample keeps 10 of each, so the pooled mean cannot move
    assert bootstrap({"a": [1.0] * 10, "b": [0.0] * 10}) == {"mean": 0.5, "low": 0.5, "high": 0.5, "n": 20}


def test_paired_differences_cancel_each_case_s_difficulty():
    rng = np.random.default_rng(0)
    difficulty = rng.normal(0, 1, 60)
    a = {("x", str(i)): d + 0.1 for i, d in enumerate(difficulty)}
    b = {("x", str(i)): d for i, d in enumerate(difficulty)}
    b[("x", "extra")] = 5.0  # a case only one side has is left out
    diff = paired(a, b)
    assert diff["n"] == 60 and abs(diff["mean"] - 0.1) < 1e-9 and excludes_zero(diff)
    unpaired = bootstrap(list(a.values()))
    assert unpaired["high"] - unpaired["low"] > 0.2  # the same shift is invisible without pairing
    assert cell(diff, signed=True).startswith("**+0.100")


def test_summary_reports_intervals_and_paired_differences():
    records = [{"character": "c", "case_id": str(i), "config": cfg, "error": None, "voice": float(v),
                "rule_pass": True} for i in range(40) for cfg, v in (("full", i % 2), ("none", 0))]
    summary = summarize(records, {"configs": ["full", "none"], "seed": 0})
    assert summary["intervals"]["full"]["voice"]["mean"] == 0.5 and summary["intervals"]["none"]["voice"]["high"] == 0
    diff = summary["paired"]["full - none"]["voice"]
    assert diff["mean"] == 0.5 and diff["low"] > 0.3 and diff["n"] == 40
    assert "| full - none |" in markdown(summary)


def test_sign_flip_and_holm():
    from chatharuhi.evaluation.stats import holm, sign_flip

    a = {("x", str(i)): 1.0 for i in range(30)}
    b = {("x", str(i)): 0.0 for i in range(30)}
    assert sign_flip(a, b) < 0.001  # 30 cases, all better: never reached by chance
    noise = {("x", str(i)): float(i % 2) for i in range(30)}
    assert sign_flip(noise, {k: 0.5 for k in noise}) == 1.0  # the mean difference is exactly 0
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03}) == {"a": 0.03, "c": 0.06, "b": 0.06}
