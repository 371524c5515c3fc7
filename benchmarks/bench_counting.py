"""Exact token budgets: how often "the sum of the parts" misses under each tiktoken encoding, and what the
one exact recount that o200k_base now gets costs per turn.

Run from the repository root:  python benchmarks/bench_counting.py [--texts 20000] [--turns 400]
1. Random three-unit texts (each unit stripped and ending in one newline, as the packer builds them, with
   punctuation, '/', '/start' and CJK in them): count of texts whose whole count differs from the sum.
2. ``ChatHaruhi.prepare`` on the built-in haruhi (hash embedder, 30 history turns, a lorebook entry that
   starts with '/start'), median and p95 per encoding in the same run; every trace is checked against
   the exact count. The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chatharuhi import ChatHaruhi  # noqa: E402
from chatharuhi.backends.scripted import ScriptedBackend  # noqa: E402
from chatharuhi.prompting.lorebook import Lorebook, LoreEntry  # noqa: E402
from chatharuhi.prompting.tokens import TiktokenCounter  # noqa: E402
from chatharuhi.types import Turn  # noqa: E402

ENCODINGS = ("cl100k_base", "o200k_base")
ALPHABET = list("春日阿虚外星人。，！？：「」/#'\"-*()[]abcXYZ019 ") + ["/start", "\n", "。\n", "：\n"]


def miscounts(encoding: str, texts: int, rng: random.Random) -> int:
    enc = TiktokenCounter(encoding=encoding)._enc

    def unit() -> str:
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 12))).strip()
        return (text or "x") + "\n"

    bad = 0
    for _ in range(texts):
        parts = [unit() for _ in range(3)]
        whole = len(enc.encode("".join(parts), disallowed_special=()))
        bad += whole != sum(len(enc.encode(p, disallowed_special=())) for p in parts)
    return bad


def prepare_ms(encoding: str, turns: int) -> dict[str, float]:
    book = Lorebook([LoreEntry("1", "/start 是SOS团的暗号。", keys=["SOS"])])
    bot = ChatHaruhi("haruhi", llm=ScriptedBackend(counter=TiktokenCounter(encoding=encoding)), embedder="hash",
                     lorebook=book)
    history = [Turn("阿虚", f"第{i}句：我们去哪里？", "当然是去找外星人！") for i in range(30)]
    times = []
    for i in range(turns):
        start = time.perf_counter()
        plan = bot.prepare(f"今天第{i}次：SOS团去哪里？", history=history)
        times.append((time.perf_counter() - start) * 1e3)
        assert plan.trace.total_tokens == bot.counter.count_messages(plan.messages), "trace is not the exact count"
    times = sorted(times[20:])  # the first turns warm the caches
    return {"median_ms": round(statistics.median(times), 3), "p95_ms": round(times[int(len(times) * 0.95)], 3),
            "additive": bot.counter.additive}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=20_000)
    ap.add_argument("--turns", type=int, default=400)
    args = ap.parse_args()
    out = {}
    for encoding in ENCODINGS:
        bad = miscounts(encoding, args.texts, random.Random(14))
        timing = prepare_ms(encoding, args.turns)
        out[encoding] = {"miscounted_if_additive": bad, "texts": args.texts, **timing}
        print(f"{encoding}: {bad} of {args.texts} texts miscounted if treated as additive; counter.additive="
              f"{timing['additive']}; prepare median {timing['median_ms']} ms, p95 {timing['p95_ms']} ms")
    out["o200k_over_cl100k_median"] = round(out["o200k_base"]["median_ms"] / out["cl100k_base"]["median_ms"], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
