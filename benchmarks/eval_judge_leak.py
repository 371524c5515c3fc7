"""How much a judge that saw the case's own scene inflates ``identity`` and ``voice``: one finished
``chatharuhi eval`` run, its replies (and the original lines) scored twice, by judges fitted on every
line (what ``chatharuhi eval`` did before) and by judges fitted without the case's scenes (what it does).

    python benchmarks/eval_judge_leak.py eval-out [--characters-dir DIR ...]   # run where the eval ran

Reads ``eval-out/results.json`` (the characters, cases, exclusions and replies of the run) and prints
a markdown table: per configuration and for the original lines, each score both ways.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chatharuhi.character.discovery import resolve_character  # noqa: E402
from chatharuhi.evaluation import metrics  # noqa: E402
from chatharuhi.evaluation.judges import Judges  # noqa: E402
from chatharuhi.evaluation.runner import MAX_CENTROID_LINES  # noqa: E402
from chatharuhi.retrieval.embeddings import get_embedder  # noqa: E402


def _scores(fitted, name: str, text: str, vec) -> tuple[float | None, float | None]:
    own = fitted.centroids.get(name)
    others = {k: v for k, v in fitted.centroids.items() if k != name}
    identity = metrics.identity(vec, own, others)[0] if own is not None else None
    voice = float(fitted.voice.log_odds(text or " ", name) > 0) if fitted.voice and name in fitted.voice.names else None
    return identity, voice


def main(argv: list[str] | None = None) -> int:
    """Re-score the run and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path, help="the --out folder of a finished `chatharuhi eval` run with a model")
    p.add_argument("--characters-dir", action="append", default=None,
                   help="where the run's characters are found by name (repeatable), e.g. ../shared/fixtures/chatharuhi")
    args = p.parse_args(argv)
    results = json.loads((args.run / "results.json").read_text(encoding="utf-8"))
    settings = results["settings"]
    refs = [*results["characters"], *settings.get("compare", [])]  # names, then --compare as given
    characters = [resolve_character(Path(r) if Path(r).is_dir() else r, args.characters_dir) for r in refs]
    lines = metrics.LineVectors(get_embedder(settings["embedder"].split(":")[0]))
    judges = Judges(characters, lambda texts: lines.embed(texts), MAX_CENTROID_LINES, settings["seed"])
    excluded = {(name, c["id"]): c["excluded"] for name, ch in results["characters"].items() for c in ch["cases"]}
    answers = {(name, c["id"]): c["answer"] for name, ch in results["characters"].items() for c in ch["cases"]}

    rows: dict[str, list[tuple]] = {}
    texts = [(r["config"], r["character"], r["case_id"], r.get("reply") or "") for r in results["records"]
             if not r.get("error") and "reply" in r]
    texts += [("original line", name, case, answers[(name, case)]) for name, case in answers]
    vecs = lines.embed([t for *_, t in texts])
    for (config, name, case, text), vec in zip(texts, vecs):
        seen = _scores(judges.fit(), name, text, vec)
        held = _scores(judges.fit({name: excluded[(name, case)]}), name, text, vec)
        rows.setdefault(config, []).append((*seen, *held))
    lines.save()

    def mean(values):
        values = [v for v in values if v is not None]
        return f"{sum(values) / len(values):.3f}" if values else "–"

    print("| scored | n | identity, judge saw the scene | identity, scene left out | voice, judge saw the scene "
          "| voice, scene left out |")
    print("|---|---|---|---|---|---|")
    for config, got in rows.items():
        cols = list(zip(*got))
        print(f"| {config} | {len(got)} | {mean(cols[0])} | {mean(cols[2])} | {mean(cols[1])} | {mean(cols[3])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
