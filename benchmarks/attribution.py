"""Speaker attribution measured on real annotated novels (../shared/fixtures/novels/, see its SOURCE.md).

    PYTHONPATH=. python benchmarks/attribution.py [--novels Emma,...] [--threshold 0.7] [--wp dev|train|none]

English (PDNC, six novels): quotation detection recall and precision (spans overlap), speaker accuracy of the best
guess by quotation type, the share attributed at the threshold and its precision, and each major character's
precision and recall of "lines put in this character's mouth" at the threshold. The cast is the corpus's
character list (main names and aliases, no genders: those are inferred from the text, as for a user's --cast).
Chinese (World of Plainness): accuracy by category, each instance read as its own 21-sentence text.
Last line: JSON of every figure.
"""

from __future__ import annotations

import argparse
import ast
import bisect
import csv
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOVELS = ROOT.parent / "shared" / "fixtures" / "novels"
PDNC = ["Emma", "Persuasion", "HardTimes", "OliverTwist", "TheInvisibleMan", "TheMysteriousAffairAtStyles"]
TYPES = ["Explicit", "Anaphoric", "Implicit"]


def pdnc_cast(folder: Path):
    """The corpus's character list as a chatharuhi Cast (the narrator's '_narr' marks and group speakers dropped)."""
    from chatharuhi.building.cast import Cast, Member

    members, major = [], []
    with (folder / "character_info.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            name = row["Main Name"].strip()
            if name.startswith("_"):
                continue
            aliases = [a for a in ast.literal_eval(row["Aliases"]) if not a.startswith("_") and a != "Narr"]
            members.append(Member(name, tuple(sorted(a for a in aliases if a != name))))
            if row["Category"].strip() == "major":
                major.append(name)
    return Cast(members, "en"), major


def gold_quotes(folder: Path) -> list[dict]:
    with (folder / "quotation_info.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["spans"] = ast.literal_eval(r["quoteByteSpans"])
    return rows


def evaluate_novel(name: str, threshold: float, llm=None, max_llm_calls: int = 0) -> dict:
    from chatharuhi.building.analysis import analyse

    folder = NOVELS / "pdnc" / name
    cast, major = pdnc_cast(folder)
    t0 = time.perf_counter()
    analysis = analyse([folder / "novel_text.txt"], cast=cast, threshold=threshold)
    took = time.perf_counter() - t0
    llm_note, llm_s = None, None
    if llm is not None:
        from chatharuhi.building.llm import llm_pass

        t1 = time.perf_counter()
        llm_note = llm_pass(analysis, llm, max_calls=max_llm_calls)
        llm_s = round(time.perf_counter() - t1, 1)
    cast = analysis.cast
    quotes = analysis.lines
    narrator = analysis.narrators.get(0)
    names = [m.name for m in cast.members]
    starts = [q.start for q in quotes]

    def overlapping(a: int, b: int) -> list[int]:
        i = bisect.bisect_left(starts, b) - 1
        out = []
        while i >= 0 and quotes[i].end > a - 8000:
            if quotes[i].end > a and quotes[i].start < b:
                out.append(i)
            i -= 1
        return out

    gold = gold_quotes(folder)
    matched_found: set[int] = set()
    by_type = defaultdict(Counter)
    per_char = defaultdict(Counter)
    rules = Counter()
    for r in gold:
        hits = sorted({i for a, b in r["spans"] for i in overlapping(a, b)})
        t = r["quoteType"] if r["quoteType"] in TYPES else "Implicit"
        c = by_type[t]
        c["gold"] += 1
        if not hits:
            continue
        matched_found.update(hits)
        c["found"] += 1
        speaker = r["speaker"].strip()
        if speaker not in names:
            c["no_cast_speaker"] += 1
            continue
        best = max((quotes[i] for i in hits), key=lambda a: a.confidence)
        guess = names[best.speaker] if best.speaker is not None else None
        c["scored"] += 1
        c["correct"] += guess == speaker
        sure = best.confidence >= threshold and guess is not None
        c["attributed"] += sure
        c["attributed_correct"] += sure and guess == speaker
        rules[(best.rule, guess == speaker)] += 1
        if speaker in major:
            per_char[speaker]["gold"] += 1
            per_char[speaker]["recalled"] += sure and guess == speaker
        if sure and guess in major:
            per_char[guess]["predicted"] += 1
            per_char[guess]["predicted_correct"] += guess == speaker
    total = Counter()
    for c in by_type.values():
        total.update(c)
    found_precision = len(matched_found) / len(quotes) if quotes else 0.0
    return {"novel": name, "seconds": round(took, 2), "quotes_found": len(quotes),
            "narrator": names[narrator] if narrator is not None else None, "llm": llm_note, "llm_seconds": llm_s,
            "detection_recall": _r(total["found"], total["gold"]), "detection_precision": round(found_precision, 3),
            "by_type": {t: _summary(by_type[t]) for t in TYPES}, "overall": _summary(total),
            "major": {k: {"precision": _r(v["predicted_correct"], v["predicted"]),
                          "recall": _r(v["recalled"], v["gold"]), "lines": v["gold"]} for k, v in per_char.items()},
            "rules": {f"{k[0]}:{'ok' if k[1] else 'wrong'}": v for k, v in sorted(rules.items())}}


def _r(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def _summary(c: Counter) -> dict:
    return {"n": c["scored"], "accuracy": _r(c["correct"], c["scored"]),
            "attributed": _r(c["attributed"], c["scored"]), "precision": _r(c["attributed_correct"], c["attributed"])}


# -- World of Plainness -----------------------------------------------------------------------------------
def wp_instances(path: Path) -> list[dict]:
    out = []
    for block in path.read_text(encoding="utf-8").strip().split("\n\n"):
        lines = block.strip().split("\n")
        keys = ("Speaker:", "Speaker index:", "Category:")
        head = [x for x in lines if x.startswith(keys)]
        body = [x for x in lines[1:] if not x.startswith(keys)]
        info = dict(x.split(": ", 1) for x in head)
        out.append({"sentences": body, "speaker": info["Speaker"].strip(), "category": info["Category"].strip()})
    return out


def wp_cast(all_text: str):
    from chatharuhi.building.cast import Cast, Member

    members = []
    for line in (NOVELS / "wp" / "name_list.txt").read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2:
            members.append(Member(parts[1], tuple(parts[2:])))
    return Cast(members, "zh").with_genders(all_text)


def evaluate_wp(split: str, threshold: float) -> dict:
    from chatharuhi.building.cast import Cast
    from chatharuhi.building.prose import attribute_prose

    insts = wp_instances(NOVELS / "wp" / f"{split}_unsplit.txt")
    all_text = "\n".join(s for name in ("train", "dev") for i in wp_instances(NOVELS / "wp" / f"{name}_unsplit.txt")
                         for s in i["sentences"])
    cast: Cast = wp_cast(all_text)
    by_cat = defaultdict(Counter)
    rules = Counter()
    for inst in insts:
        text = "\n".join(inst["sentences"])
        result = attribute_prose(text, cast, "zh")
        target = sum(len(s) + 1 for s in inst["sentences"][:10])
        hit = [a for a in result.attributions if result.ctx.quotes[a.quote].paragraph == 10]
        if not hit:
            hit = [a for a in result.attributions if result.ctx.quotes[a.quote].start >= target][:1]
        c = by_cat[inst["category"]]
        c["scored"] += 1
        gold = cast.index(inst["speaker"])
        if not hit:
            rules[("not-found", False)] += 1
            continue
        a = max(hit, key=lambda a: a.confidence)
        ok = a.speaker is not None and a.speaker == gold
        c["correct"] += ok
        sure = a.speaker is not None and a.confidence >= threshold
        c["attributed"] += sure
        c["attributed_correct"] += sure and ok
        rules[(a.rule, ok)] += 1
    total = Counter()
    for c in by_cat.values():
        total.update(c)
    return {"split": split, "by_category": {k: _summary(v) for k, v in sorted(by_cat.items())},
            "overall": _summary(total), "rules": {f"{k[0]}:{'ok' if k[1] else 'wrong'}": v for k, v in
                                                   sorted(rules.items())}}


def time_one_mb(runs: int = 3) -> dict:
    """build-character's whole offline path (read, decode, find the cast, attribute, cut scenes; nothing written)
    on 1,000,000 characters of Emma and Oliver Twist, with no cast given and no LLM."""
    import resource
    import statistics
    import tempfile

    from chatharuhi.building.build import build_character

    text = "\n\n".join((NOVELS / "pdnc" / n / "novel_text.txt").read_text(encoding="utf-8")
                        for n in ("Emma", "OliverTwist"))[:1_000_000]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "one_mb.txt"
        path.write_text(text, encoding="utf-8")
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            result = build_character([path], "Emma", dry_run=True)
            times.append(time.perf_counter() - t0)
    times.sort()
    return {"chars": len(text), "bytes": len(text.encode("utf-8")), "median_s": round(statistics.median(times), 2),
            "p95_s": round(times[-1], 2), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "lines": result.lines, "scenes": result.scenes}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--novels", default=",".join(PDNC))
    ap.add_argument("--threshold", type=float, default=None, help="default: the library's")
    ap.add_argument("--wp", default="dev", help="dev, train, both or none")
    ap.add_argument("--verbose", action="store_true", help="also print each rule's right and wrong counts")
    ap.add_argument("--one-mb", action="store_true", help="also time the whole build on a 1 MB novel")
    ap.add_argument("--llm", help="also run the LLM pass with this backend (e.g. embedded, openai)")
    ap.add_argument("--max-llm-calls", type=int, default=20, help="cap of LLM requests per novel (default 20)")
    args = ap.parse_args(argv)
    from chatharuhi.config import BUILD_THRESHOLD

    threshold = BUILD_THRESHOLD if args.threshold is None else args.threshold
    if not NOVELS.is_dir():
        print(f"missing {NOVELS}: the shared/ folder must sit beside the checkout", file=sys.stderr)
        return 2
    report = {"threshold": threshold, "novels": [], "wp": []}
    for name in [n for n in args.novels.split(",") if n]:
        r = evaluate_novel(name, threshold, args.llm, args.max_llm_calls)
        report["novels"].append(r)
        o = r["overall"]
        print(f"{name:28} det R {r['detection_recall']:.3f} P {r['detection_precision']:.3f}  "
              + "  ".join(f"{t[:4]} {r['by_type'][t]['accuracy']} ({r['by_type'][t]['n']})" for t in TYPES)
              + f"  all {o['accuracy']}  @thr {o['attributed']} P {o['precision']}  narr {r['narrator']} "
              f"{r['seconds']}s")
        if r["llm"]:
            print(f"    {r['llm']} in {r['llm_seconds']} s")
        for k, v in r["major"].items():
            print(f"    {k:26} P {v['precision']} R {v['recall']} ({v['lines']})")
        if args.verbose:
            print("    rules:", r["rules"])
    for split in {"both": ["train", "dev"], "none": []}.get(args.wp, [args.wp]):
        w = evaluate_wp(split, threshold)
        report["wp"].append(w)
        print(f"WP {split}: " + "  ".join(f"{k} {v['accuracy']} ({v['n']})" for k, v in w["by_category"].items())
              + f"  all {w['overall']['accuracy']}  @thr {w['overall']['attributed']} P {w['overall']['precision']}")
        if args.verbose:
            print("    rules:", w["rules"])
    if args.one_mb:
        report["one_mb"] = time_one_mb()
        o = report["one_mb"]
        print(f"1 MB novel ({o['bytes']:,} bytes), whole build without LLM: median {o['median_s']} s, p95 "
              f"{o['p95_s']} s, peak RSS {o['peak_rss_mb']} MB ({o['lines']} lines, {o['scenes']} scenes for Emma)")
    print(json.dumps(report, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
