"""Sweep the hybrid retrieval weights and top_k with the evaluation's retrieval metrics (no model called).

    python benchmarks/eval_sweep.py --out /tmp/sweep CHARACTER... [--characters-dir DIR]

For every (dense weight, top_k) the harness runs retrieval-only over every usable case of every
character (``full`` configuration: the real retriever and packer), plus the ``random`` baseline once
per top_k. Prints one Markdown table: mean answer support over the packed prompt, over the raw top-k,
key-term recall, and scenes packed. Uses the chatharuhi home's caches (set CHATHARUHI_HOME).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from chatharuhi.evaluation import run_eval

DENSE_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
TOP_KS = (3, 6, 12, 24)


def _means(out: Path, config: str) -> dict:
    records = [r for r in json.loads((out / "results.json").read_text(encoding="utf-8"))["records"]
               if r["config"] == config and not r["error"]]
    by_char: dict[str, list[dict]] = {}
    for r in records:
        by_char.setdefault(r["character"], []).append(r)

    def macro(field: str) -> float:  # mean of per-character means: every character counts once
        per = [statistics.mean(v for r in rs if (v := r.get(field)) is not None) for rs in by_char.values()]
        return round(statistics.mean(per), 4)

    return {"answer_support": macro("answer_support"), "support_retrieved": macro("answer_support_retrieved"),
            "key_term_recall": macro("key_term_recall"),
            "packed": round(statistics.mean(len(r["scenes"]) for r in records), 2), "cases": len(records)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("characters", nargs="+")
    parser.add_argument("--characters-dir", action="append")
    parser.add_argument("--out", required=True)
    parser.add_argument("--cases", type=int, default=0, help="cases per character (0 = every usable scene)")
    parser.add_argument("--embedder", default=None)
    args = parser.parse_args()
    root = Path(args.out)
    rows = []
    for top_k in TOP_KS:
        grid = [(w, "full") for w in DENSE_WEIGHTS] + [(None, "random")]
        for dense, config in grid:
            weights = {} if dense is None else {"dense_weight": dense, "lexical_weight": round(1 - dense, 2)}
            out = root / f"k{top_k}-{config}-{dense}"
            start = time.perf_counter()
            run_eval(args.characters, out, characters_dir=args.characters_dir, embedder=args.embedder,
                     cases=args.cases, retrieval_only=True, configs=(config,), top_k=top_k, compare=(),
                     progress=False, plot=False, log=lambda m: None, **weights)
            row = {"top_k": top_k, "config": config, "dense_weight": dense, **_means(out, config),
                   "seconds": round(time.perf_counter() - start, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    (root / "sweep.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print("\n| top_k | retrieval | dense/lexical | answer_support (packed) | support@k (raw) | key_term_recall | "
          "scenes packed |\n|---|---|---|---|---|---|---|")
    for r in rows:
        w = "–" if r["dense_weight"] is None else f"{r['dense_weight']}/{round(1 - r['dense_weight'], 2)}"
        print(f"| {r['top_k']} | {r['config']} | {w} | {r['answer_support']:.3f} | {r['support_retrieved']:.3f} | "
              f"{r['key_term_recall']:.3f} | {r['packed']} |")


if __name__ == "__main__":
    main()
