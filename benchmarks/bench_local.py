"""Local model speed: chatharuhi's llama_cpp backend against raw llama-cpp-python, and the KV cache across turns.

Run from the repository root, not nice'd (a nice'd run measures the scheduler; on a shared machine the
figures that matter are the ratios):

    python benchmarks/bench_local.py --quick      # a few minutes
    python benchmarks/bench_local.py              # more rounds, longer replies

The model is the embedded one (SmolLM2-135M-Instruct Q4_1) on the same llama-cpp-python build on
every side, with the same n_ctx and sampling (greedy); threads below. In one run it measures:

1. the matmul roofline: numpy float32 matrix products of the model's own shapes (GFLOPS), and from
   it the prefill rate the machine allows, 1e9 * GFLOPS / (2 * weights per token);
2. prefill and decode, ours vs raw, on the same prompt (turn 1 of a ``sherlock`` conversation packed
   at the full ChatHaruhi budgets, story 1,500 / history 1,200): raw is ``llama_cpp.Llama`` in a
   child process; ours is ``LlamaCppBackend`` (its worker process), called as chatharuhi calls it.
   The KV cache is cleared before every repetition on both sides, so both read the whole prompt.
   Sides alternate for ``--rounds`` rounds; prefill tok/s = prompt tokens / time to first token;
3. a five-turn conversation through ``ChatHaruhi`` at the full budgets, with the default embedder and story
   reuse (reuse.py): time to first token per turn, the prompt tokens the KV cache already held
   (``trace.reused_tokens``) and whether the turn kept the story (``trace.story_kept``).

Raw runs twice, both without any OpenMP variable: ``raw`` exactly as a user runs it (``Llama(model_path,
n_ctx)``: llama-cpp-python's own thread defaults, half the logical CPUs to decode, all of them to
read the prompt), and ``raw_same_threads`` with our starting thread count (the physical cores) on
both, so that ``ours_over_raw_same_threads_*`` isolates chatharuhi's own cost. Ours runs with its
shipped defaults (``n_threads="auto"``: on a busy machine it uses fewer threads; the JSON says how
many); ``--threads N`` fixes N threads on all three sides instead. The last line is one JSON object:
ours_over_raw_prefill, ours_over_raw_decode, turn5_over_turn1_ttft, prefill_share_of_roofline,
turn5_reused_share and the figures behind them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
N_CTX = 4096
STORY, HISTORY = 1500, 1200
QUERIES = [
    "Holmes, tell me everything you deduced about the visitor who came this morning.",
    "Why did you say he had been in Afghanistan?",
    "And what about the letter he left on the table?",
    "Should we call Inspector Lestrade now, or wait until tonight?",
    "What will you do if the man never comes back?",
]
RAW_CHILD = r"""
import json, sys, time
from llama_cpp import Llama
cfg = json.loads(sys.stdin.read())
threads = {"n_threads": cfg["threads"], "n_threads_batch": cfg["threads"]} if cfg["threads"] else {}
llm = Llama(model_path=cfg["model"], n_ctx=cfg["n_ctx"], seed=0, verbose=False, **threads)
runs = []
for _ in range(cfg["reps"]):
    llm.reset()
    start, first, n = time.perf_counter(), None, 0
    for chunk in llm.create_completion(prompt=cfg["tokens"], max_tokens=cfg["max_tokens"], temperature=0.0,
                                       repeat_penalty=1.1, stream=True):
        n += 1
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    runs.append({"ttft_s": first - start, "decode_s": end - first, "chunks": n})
print(json.dumps(runs))
"""


def roofline(weights: int, reps: int) -> dict:
    """float32 GFLOPS of numpy on the model's matmul shapes (a 512-token batch), and the prefill bound."""
    import numpy as np

    rng = np.random.default_rng(0)
    shapes = [(512, 576, 576), (512, 576, 1536), (512, 1536, 576)]  # SmolLM2-135M: attention, ffn up, ffn down
    mats = [(rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32))
            for m, k, n in shapes]
    best = []
    for _ in range(reps):
        start = time.perf_counter()
        flops = 0
        for _ in range(10):
            for a, b in mats:
                a @ b
                flops += 2 * a.shape[0] * a.shape[1] * b.shape[1]
        best.append(flops / (time.perf_counter() - start) / 1e9)
    gflops = statistics.median(best)
    return {"gflops": gflops, "weights_per_token": weights, "roofline_tok_s": gflops * 1e9 / (2 * weights)}


def weights_per_token(path: Path) -> int:
    """Weights multiplied per prompt token: every 2-D tensor but the token embedding (tied output: last token only)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    return sum(int(t.n_elements) for t in reader.tensors if len(t.shape) >= 2 and t.name != "token_embd.weight")


def run_raw(model: Path, tokens: list[int], threads: int | None, reps: int, max_tokens: int, env: dict) -> list[dict]:
    cfg = {"model": str(model), "n_ctx": N_CTX, "threads": threads, "tokens": tokens, "reps": reps,
           "max_tokens": max_tokens}
    out = subprocess.run([sys.executable, "-c", RAW_CHILD], input=json.dumps(cfg), capture_output=True, text=True,
                         check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_ours(backend, messages, reps: int, max_tokens: int) -> list[dict]:
    runs = []
    for _ in range(reps):
        backend.reset_cache()
        start, first, n = time.perf_counter(), None, 0
        stream = backend.stream(messages, max_tokens=max_tokens, temperature=0.0, seed=0)
        for _chunk in stream:
            n += 1
            if first is None:
                first = time.perf_counter()
        end = time.perf_counter()
        runs.append({"ttft_s": first - start, "decode_s": end - first, "chunks": n,
                     "decode_tokens": stream.stats.get("decode_tokens"), "reused": stream.stats.get("reused_tokens"),
                     "threads_seen": stream.stats.get("threads_seen")})
    return runs


def conversation(backend, turns: int, max_tokens: int) -> list[dict]:
    from chatharuhi import ChatHaruhi

    backend.reset_cache()
    # The default embedder, as users get it: which scenes a message retrieves decides whether the story is kept.
    bot = ChatHaruhi(role="sherlock", llm=backend, story_tokens=STORY, history_tokens=HISTORY)
    out = []
    for query in QUERIES[:turns]:
        start, first = time.perf_counter(), None
        reply = bot.stream(query, role="Watson", max_tokens=max_tokens, temperature=0.0)
        for _chunk in reply:
            if first is None:
                first = time.perf_counter()
        trace = reply.trace
        out.append({"ttft_s": first - start, "prompt_tokens": trace.total_tokens, "reused_tokens": trace.reused_tokens,
                    "scenes": len(trace.included_scenes), "history_turns": sum(t.included for t in trace.turns),
                    "story_kept": trace.story_kept})
        print(f"  turn {len(out)}: ttft {out[-1]['ttft_s']:.2f} s, prompt {trace.total_tokens} tokens, "
              f"{trace.reused_tokens} reused from the KV cache, story {'kept' if trace.story_kept else 'new'}",
              file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round x 1 rep, 16-token replies")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="fix n_threads on all sides (default: raw as users run it, ours 'auto')")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.reps, args.max_tokens = 1, 1, 16
    os.environ["CHATHARUHI_HOME"] = tempfile.mkdtemp(prefix="bench-local-")
    load_start = os.getloadavg()[0]

    from chatharuhi import ChatHaruhi
    from chatharuhi.backends.llama_cpp.backend import LlamaCppBackend
    from chatharuhi.backends.llama_cpp.worker import physical_cores
    from chatharuhi.models.embedded import embedded_model

    threads = args.threads or physical_cores()
    model = embedded_model()
    backend = LlamaCppBackend(n_ctx=N_CTX, n_threads=args.threads or "auto", temperature=0.0)
    # The default embedder, as users get it: which scenes a message retrieves decides whether the story is kept.
    bot = ChatHaruhi(role="sherlock", llm=backend, story_tokens=STORY, history_tokens=HISTORY)
    plan = bot.prepare(QUERIES[0], role="Watson")
    messages = plan.messages
    tokens = backend.render(messages).tokens
    print(f"model {model.name}; {physical_cores()} physical cores, ours {args.threads or 'auto'} threads; prompt {len(tokens)} tokens (turn 1 at story {STORY} / "
          f"history {HISTORY}); {args.rounds} rounds x {args.reps} reps, {args.max_tokens}-token replies",
          file=sys.stderr)

    roof = roofline(weights_per_token(model), reps=3)
    print(f"roofline: numpy float32 {roof['gflops']:.1f} GFLOPS -> {roof['roofline_tok_s']:.0f} prompt tok/s "
          f"({roof['weights_per_token'] / 1e6:.0f}M weights per token)", file=sys.stderr)

    # "raw": llama-cpp-python as a user runs it; "raw_same_threads": with the thread count ours starts with,
    # so ours/raw_same_threads is the cost of chatharuhi itself (worker, rendering, IPC) on a quiet machine.
    from chatharuhi.config import OMP_ENV_NAMES

    plain = {k: v for k, v in os.environ.items() if k not in OMP_ENV_NAMES}
    raw_threads = {"raw": args.threads, "raw_same_threads": threads}
    sides: dict[str, list[dict]] = {"raw": [], "raw_same_threads": [], "ours": []}
    for r in range(args.rounds):
        for side in (("raw", "raw_same_threads", "ours") if r % 2 == 0 else ("ours", "raw_same_threads", "raw")):
            if side != "ours":
                sides[side] += run_raw(model, tokens, raw_threads[side], args.reps, args.max_tokens, plain)
            else:
                sides["ours"] += run_ours(backend, messages, args.reps, args.max_tokens)
            print(f"  round {r + 1} {side}: ttft {sides[side][-1]['ttft_s']:.2f} s", file=sys.stderr)

    def rates(runs: list[dict]) -> tuple[float, float]:
        prefill = statistics.median(len(tokens) / run["ttft_s"] for run in runs)
        decode = statistics.median((run["chunks"] - 1) / run["decode_s"] for run in runs if run["chunks"] > 1)
        return prefill, decode

    raw_prefill, raw_decode = rates(sides["raw"])
    same_prefill, same_decode = rates(sides["raw_same_threads"])
    ours_prefill, ours_decode = rates(sides["ours"])
    turns = conversation(backend, args.turns, args.max_tokens)
    backend.close()

    result = {
        "prompt_tokens": len(tokens), "physical_cores": physical_cores(), "ours_threads": args.threads or "auto",
        "ours_threads_seen": sorted({t for run in sides["ours"] for t in run["threads_seen"] or ()}),
        "ours_omp_env": backend.worker.omp_env, "ours_load_at_start": backend.worker.load_at_start,
        "raw_prefill_tok_s": round(raw_prefill, 1), "ours_prefill_tok_s": round(ours_prefill, 1),
        "raw_decode_tok_s": round(raw_decode, 1), "ours_decode_tok_s": round(ours_decode, 1),
        "raw_same_threads_prefill_tok_s": round(same_prefill, 1), "raw_same_threads_decode_tok_s": round(same_decode, 1),
        "roofline_gflops": round(roof["gflops"], 1), "roofline_prefill_tok_s": round(roof["roofline_tok_s"], 1),
        "turns": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in t.items()} for t in turns],
        "ours_over_raw_prefill": round(ours_prefill / raw_prefill, 3),
        "ours_over_raw_decode": round(ours_decode / raw_decode, 3),
        "ours_over_raw_same_threads_prefill": round(ours_prefill / same_prefill, 3),
        "ours_over_raw_same_threads_decode": round(ours_decode / same_decode, 3),
        "load_average_start": round(load_start, 2),
        "turn5_over_turn1_ttft": round(turns[-1]["ttft_s"] / turns[0]["ttft_s"], 3),
        "turn5_reused_share": round((turns[-1]["reused_tokens"] or 0) / turns[-1]["prompt_tokens"], 3),
        # turns after the first that kept the story, and their median time to first token over turn 1's
        "kept_turns": sum(bool(t["story_kept"]) for t in turns[1:]),
        "kept_over_turn1_ttft": round(statistics.median(t["ttft_s"] for t in turns[1:] if t["story_kept"])
                                      / turns[0]["ttft_s"], 3) if any(t["story_kept"] for t in turns[1:]) else None,
        "prefill_share_of_roofline": round(ours_prefill / roof["roofline_tok_s"], 3),
    }
    print(f"{'':17} {'prefill tok/s':>14} {'decode tok/s':>13}")
    print(f"{'raw':17} {raw_prefill:14.1f} {raw_decode:13.1f}")
    print(f"{'raw, same threads':17} {same_prefill:14.1f} {same_decode:13.1f}")
    print(f"{'ours':17} {ours_prefill:14.1f} {ours_decode:13.1f}")
    print(f"roofline {roof['roofline_tok_s']:.0f} prompt tok/s; ours reads prompts at "
          f"{result['prefill_share_of_roofline']:.0%} of it")
    for i, t in enumerate(turns, 1):
        print(f"turn {i}: ttft {t['ttft_s']:.2f} s, {t['prompt_tokens']} prompt tokens, {t['reused_tokens']} reused, "
              f"story {'kept' if t['story_kept'] else 'new'}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
