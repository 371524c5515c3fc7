"""The transformers backend under concurrent callers: its serial queue against the lock it replaced (issue 9 §1).

Run from the repository root (the figures that matter are the ratios, measured in the same run):

    python benchmarks/bench_transformers_queue.py --quick     # about a minute
    python benchmarks/bench_transformers_queue.py             # more rounds, longer replies

The model is a tiny randomly initialised Llama with two real PEFT LoRA adapters, built here exactly as
the tests build it (no downloads). Both sides drive the same loaded model, greedy, with the callers
alternating between the two adapters:

- ``new``: ``TransformersBackend.stream`` as shipped (one job at a time on the model's own thread);
- ``old``: a copy, kept only here, of the pattern it replaced: a lock taken inside the generator and held
  across its yields, with a generate thread per call feeding a ``TextIteratorStreamer``.

Scenarios, each run for both sides, sides alternating for ``--rounds`` rounds:

- ``single``: 1 thread x 12 calls, no contention: the cost of the queue itself;
- ``eager``: 4 threads x 3 calls each, every caller reading its stream as fast as it comes;
- ``slow_reader``: the same, but thread 0 reads each chunk ``--pause`` seconds apart (a slow client, a
  Gradio tab), so with the old lock every other caller waits for that reader.

Per call: the time from the call to the end of its stream (the wall a user sees) and to its first
chunk; per scenario: the total wall for all 12 calls. Printed as median / p95 / max per side and the
ratio new / old; "others" leaves out the slow reader's own calls. The last line is one JSON object.

Expect, under contention: the same total (one generation at a time either way); a higher median but a
lower worst case per call for ``new``, since its queue is first come first served while a released lock
usually goes back to the thread that just released it (one caller's calls run back to back, the others
starve); and with a slow reader, ``new`` no longer makes everyone wait for that reader.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

THREADS, CALLS = 4, 3
SCENARIOS = {"single": (1, THREADS * CALLS, False), "eager": (THREADS, CALLS, False),  # threads, calls, slow
             "slow_reader": (THREADS, CALLS, True)}
ADAPTERS = ("holmes", "haruhi")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


class LockedAcrossYields:
    """The replaced pattern (the baseline only): a lock held across the generator's yields."""

    def __init__(self, backend):
        self.backend, self.lock = backend, threading.RLock()

    def stream(self, messages, **options):
        request, _ = self.backend._request(messages, options)
        return self._generate(request)

    def _generate(self, request):
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        from chatharuhi.backends.transformers.generate import cut_at_stop

        b, torch = self.backend, self.backend.torch
        with self.lock:
            streamer = TextIteratorStreamer(b.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
            stop = threading.Event()
            halt = lambda ids, scores, **kw: torch.full((ids.shape[0],), stop.is_set(), dtype=torch.bool)  # noqa: E731
            ids = torch.tensor([request.ids])

            def run():
                try:
                    with torch.inference_mode(), b._adapter_scope(request.adapter):
                        b.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                         max_new_tokens=request.max_new, streamer=streamer,
                                         stopping_criteria=StoppingCriteriaList([halt]),
                                         pad_token_id=b.tokenizer.pad_token_id, **request.sampling)
                except BaseException:
                    streamer.end()
                    raise

            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            pending = ""  # as the old code did: text that may start a stop string is held back, empty text skipped
            try:
                for piece in streamer:
                    pending += piece
                    safe, done = cut_at_stop(pending, request.stop)
                    if safe:
                        yield safe
                    if done:
                        return
                    pending = pending[len(safe):]
                if pending:
                    yield pending
            finally:
                stop.set()
                worker.join()


def run_scenario(stream, messages, max_tokens: int, threads: int, calls: int, pause: float) -> dict:
    """``threads`` threads x ``calls`` calls; thread 0 waits ``pause`` s between chunks. Per-call and total walls."""
    walls, firsts, tokens_out, counts, slow = [], [], [], [], []
    lock, errors = threading.Lock(), []

    def caller(i: int):
        try:
            for k in range(calls):
                start = time.perf_counter()
                first = None
                text = ""
                for chunk in stream(messages, max_tokens=max_tokens, adapter=ADAPTERS[(i + k) % 2]):
                    first = first if first is not None else time.perf_counter() - start
                    text += chunk
                    if i == 0 and pause:
                        time.sleep(pause)
                with lock:
                    walls.append(time.perf_counter() - start)
                    slow.append(i == 0 and bool(pause))
                    firsts.append(first or 0.0)
                    tokens_out.append(text)
                    counts.append(len(text))
        except BaseException as exc:  # noqa: BLE001 - reported
            errors.append(exc)

    start = time.perf_counter()
    workers = [threading.Thread(target=caller, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    if errors:
        raise errors[0]
    return {"walls": walls, "firsts": firsts, "total": time.perf_counter() - start, "texts": tokens_out,
            "chars": counts, "slow": slow}


def build(root: Path, hidden: int):
    from test_backend_transformers import MESSAGES, _adapter, _model, _tokenizer

    from chatharuhi.backends.transformers.backend import TransformersBackend

    tokenizer = _tokenizer()
    _model(tokenizer, hidden).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    for seed, name in enumerate(ADAPTERS, 1):
        _adapter(_model(tokenizer, hidden), root / name, seed=seed)
    backend = TransformersBackend(root / "base", adapters={n: root / n for n in ADAPTERS}, device="cpu",
                                  temperature=0)
    return backend, MESSAGES


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 rounds, 16-token replies")
    p.add_argument("--rounds", type=int, default=None, help="rounds of old/new alternation (default 5, 2 quick)")
    p.add_argument("--max-tokens", type=int, default=None, help="tokens per reply (default 32, 16 quick)")
    p.add_argument("--hidden", type=int, default=256, help="the tiny model's hidden size (2 layers)")
    p.add_argument("--pause", type=float, default=0.05, help="the slow reader's seconds between chunks")
    p.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads (1: steadier timings)")
    args = p.parse_args()
    rounds = args.rounds or (2 if args.quick else 5)
    max_tokens = args.max_tokens or (16 if args.quick else 32)

    import torch

    torch.set_num_threads(args.torch_threads)
    backend, messages = build(Path(tempfile.mkdtemp(prefix="bench-tfq-")), args.hidden)
    old = LockedAcrossYields(backend)
    sides = {"old": old.stream, "new": backend.stream}
    results: dict = {(s, sc): [] for s in sides for sc in SCENARIOS}
    for side in sides:  # warm-up, and the two sides must say the same thing
        sides[side](messages, max_tokens=4, adapter="holmes")
    for r in range(rounds):
        for scenario, (threads, calls, slow) in SCENARIOS.items():
            for side in (("old", "new") if r % 2 == 0 else ("new", "old")):
                out = run_scenario(sides[side], messages, max_tokens, threads, calls, args.pause if slow else 0.0)
                results[(side, scenario)].append(out)
                print(f"round {r + 1} {scenario:11s} {side}: total {out['total']:.2f} s", file=sys.stderr)
    same = sorted(results[("old", "eager")][0]["texts"]) == sorted(results[("new", "eager")][0]["texts"])

    summary: dict = {"threads": THREADS, "calls_per_thread": CALLS, "max_tokens": max_tokens, "rounds": rounds,
                     "hidden": args.hidden,
                     "pause_s": args.pause, "torch_threads": args.torch_threads, "same_replies": same}
    print(f"{THREADS * CALLS} calls per scenario, {max_tokens} tokens each, {rounds} round(s); seconds")
    print(f"{'scenario':12s} {'side':4s} {'call p50':>9s} {'call p95':>9s} {'call max':>9s} {'first p50':>9s} {'others p95':>10s} "
          f"{'total':>7s} {'chars':>6s}")
    for scenario in SCENARIOS:
        for side in sides:
            runs = results[(side, scenario)]
            walls = [w for run in runs for w in run["walls"]]
            others = [w for run in runs for w, s in zip(run["walls"], run["slow"]) if not s]  # not the slow reader
            firsts = [f for run in runs for f in run["firsts"]]
            total = statistics.median(run["total"] for run in runs)
            chars = [n for run in runs for n in run["chars"]]
            row = {"call_p50_s": statistics.median(walls), "call_p95_s": pct(walls, 95), "call_max_s": max(walls),
                   "first_chunk_p50_s": statistics.median(firsts), "total_s": total,
                   "others_call_p95_s": pct(others, 95), "call_mean_s": statistics.mean(walls),
                   "chars_per_call": statistics.mean(chars)}
            summary[f"{scenario}_{side}"] = {k: round(v, 4) for k, v in row.items()}
            print(f"{scenario:12s} {side:4s} {row['call_p50_s']:9.3f} {row['call_p95_s']:9.3f} {row['call_max_s']:9.3f} "
                  f"{row['first_chunk_p50_s']:9.3f} {row['others_call_p95_s']:10.3f} {total:7.2f} "
                  f"{row['chars_per_call']:6.1f}")
        new, old_ = summary[f"{scenario}_new"], summary[f"{scenario}_old"]
        summary[f"{scenario}_total_new_over_old"] = round(new["total_s"] / old_["total_s"], 3)
        summary[f"{scenario}_call_p50_new_over_old"] = round(new["call_p50_s"] / old_["call_p50_s"], 3)
        summary[f"{scenario}_call_p95_new_over_old"] = round(new["call_p95_s"] / old_["call_p95_s"], 3)
        summary[f"{scenario}_call_max_new_over_old"] = round(new["call_max_s"] / old_["call_max_s"], 3)
        summary[f"{scenario}_others_p95_new_over_old"] = round(new["others_call_p95_s"] / old_["others_call_p95_s"], 3)
    backend.close()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
