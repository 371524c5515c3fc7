"""Judge-free evaluation of a character setup: test cases from its own scenes, retrieval and generation scores.

    cases.py    character folder -> EvalCase (q by another speaker, long answer a, earlier lines as history)
    metrics.py  answer support, key-term recall, cosine, ROUGE-L, identity, rule checks
    runner.py   every case x configuration (full / none / random / system_only), checkpointed
    report.py   summary.json, summary.md, results.json, scores.png

``run_eval(["haruhi"], "out/", backend="openai")`` or ``chatharuhi eval haruhi --out out/``.
"""

from .cases import EvalCase, build_cases
from .report import summarize
from .runner import CONFIGS, run_eval

__all__ = ["CONFIGS", "EvalCase", "build_cases", "run_eval", "summarize"]
