"""Local model threads: OpenMP wait policies, thread counts and builds, on a quiet machine and under load.

Run from the repository root, NOT nice'd (the point is how the model competes for the cores):

    python benchmarks/bench_threads.py --quick                     # ~3 minutes: quiet, 1 and 2 busy cores
    python benchmarks/bench_threads.py --hogs 0 1 2 --rounds 3     # ~10 minutes
    python benchmarks/bench_threads.py --build noomp=/work/venv-noomp/bin/python \\
                                       --build avx512=/work/venv-avx512/bin/python

Load is made by ``--hogs`` busy-loop processes (``while True: pass``, not nice'd), like a user's
compile or browser tab. Every variant reads the same prompt (``--prompt`` tokens of English text)
and generates ``--max-tokens`` greedy tokens with the embedded model (SmolLM2-135M Q4_1), in a
fresh process per round; variants alternate within a round, so slow drifts of the machine hit all
of them. Raw variants are ``llama_cpp.Llama`` as a user runs it, with one OpenMP setting and
thread count each; ``ours`` is chatharuhi's worker with its shipped defaults (``n_threads="auto"``).
``--build NAME=PYTHON`` adds the same default variant run by another llama-cpp-python build (e.g.
``-DGGML_OPENMP=OFF``, or with AVX-512), reported against the build this script runs on.

Per load: prefill tok/s (prompt / time to first token) and decode tok/s, medians, with the p95 of
time to first token and of ms per decoded token. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
N_CTX = 2048
TEXT = "Holmes looked at the letter and said nothing for a long time. " * 80
RAW_CHILD = r"""
import json, sys, time
from llama_cpp import Llama
cfg = json.loads(sys.stdin.read())
llm = Llama(model_path=cfg["model"], n_ctx=cfg["n_ctx"], n_threads=cfg["threads"], n_threads_batch=cfg["batch"],
            seed=0, verbose=False)
tokens = llm.tokenize(cfg["text"].encode())[:cfg["prompt"]]
runs = []
for _ in range(cfg["reps"]):
    llm.reset()
    start, first, n = time.perf_counter(), None, 0
    for chunk in llm.create_completion(prompt=tokens, max_tokens=cfg["max_tokens"], temperature=0.0,
                                       repeat_penalty=1.0, stream=True):
        n += 1
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    runs.append({"ttft_s": first - start, "decode_s": end - first, "decoded": n - 1, "prompt": len(tokens)})
print(json.dumps(runs))
"""
OURS_CHILD = r"""
import json, os, sys, tempfile, time
os.environ["CHATHARUHI_HOME"] = tempfile.mkdtemp(prefix="bench-threads-")
from chatharuhi.backends.llama_cpp.backend import Generation, LlamaCppBackend
cfg = json.loads(sys.stdin.read())
backend = LlamaCppBackend(n_ctx=cfg["n_ctx"], temperature=0.0)
tokens = backend.llm.tokenize(cfg["text"].encode())[:cfg["prompt"]]
runs = []
for _ in range(cfg["reps"]):
    request = {"tokens": tokens, "max_tokens": cfg["max_tokens"], "stop": [], "stop_ids": [], "reset": True,
               "params": {"temperature": 0.0, "repeat_penalty": 1.0, "seed": 0}}
    start, first = time.perf_counter(), None
    generation = Generation(backend.worker, request, "")
    for _chunk in generation:
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    s = generation.stats
    runs.append({"ttft_s": first - start, "decode_s": end - first, "decoded": s["decode_tokens"],
                 "prompt": len(tokens), "threads": s.get("n_threads"), "others_busy": s.get("others_busy")})
backend.close()
print(json.dumps(runs))
"""


def variants(cores: int, builds: dict[str, str]) -> dict[str, dict]:
    """name -> how to run it: python, extra environment, threads (decode), batch threads (prefill)."""
    py = sys.executable
    out = {
        f"default-{cores}t": {"python": py, "env": {}, "threads": cores, "batch": cores},
        f"passive-{cores}t": {"python": py, "env": {"OMP_WAIT_POLICY": "PASSIVE"}, "threads": cores, "batch": cores},
        f"spin10k-{cores}t": {"python": py, "env": {"GOMP_SPINCOUNT": "10000"}, "threads": cores, "batch": cores},
    }
    if cores > 1:
        out[f"default-{cores - 1}t"] = {"python": py, "env": {}, "threads": cores - 1, "batch": cores - 1}
        out[f"passive-1t-decode-{cores}t-prefill"] = {"python": py, "env": {"OMP_WAIT_POLICY": "PASSIVE"},
                                                      "threads": 1, "batch": cores}
    for name, python in builds.items():  # at 1 thread too: the kernels alone, whatever the machine's load
        out[f"{name}-{cores}t"] = {"python": python, "env": {}, "threads": cores, "batch": cores}
        if cores > 1:
            out[f"{name}-1t"] = {"python": python, "env": {}, "threads": 1, "batch": 1}
    out["ours"] = {"python": py, "env": None}
    return out


def run_variant(spec: dict, cfg: dict) -> list[dict]:
    from chatharuhi.config import OMP_ENV_NAMES

    env = {k: v for k, v in os.environ.items() if k not in OMP_ENV_NAMES}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    if spec["env"] is None:
        code = OURS_CHILD
    else:
        code = RAW_CHILD
        env.update(spec["env"])
        cfg = {**cfg, "threads": spec["threads"], "batch": spec["batch"]}
    try:
        out = subprocess.run([spec["python"], "-c", code], input=json.dumps(cfg), capture_output=True, text=True,
                             env=env, timeout=cfg["timeout"])
    except subprocess.TimeoutExpired:  # a variant that collapses under load: counted as that slow, not waited for
        s = cfg["timeout"]
        return [{"ttft_s": s, "decode_s": s, "decoded": 1, "prompt": cfg["prompt"], "timed_out": True}]
    if out.returncode != 0:
        raise SystemExit(f"variant failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered) + 0.5) - 1))]


def summarise(runs: list[dict]) -> dict:
    prefill = [r["prompt"] / r["ttft_s"] for r in runs]
    decode = [r["decoded"] / r["decode_s"] for r in runs if r["decoded"] > 0]
    out = {"prefill_tok_s": round(statistics.median(prefill), 2), "ttft_p95_s": round(p95([r["ttft_s"] for r in runs]), 3),
           "decode_tok_s": round(statistics.median(decode), 2),
           "decode_ms_p95": round(p95([1000 / d for d in decode]), 2), "n": len(runs),
           "timed_out": sum(1 for r in runs if r.get("timed_out"))}
    threads = [r["threads"] for r in runs if r.get("threads") is not None]
    if threads:
        out["threads_chosen"] = sorted(set(threads))
        out["others_busy_median"] = round(statistics.median(r["others_busy"] for r in runs if r.get("others_busy") is not None), 2) \
            if any(r.get("others_busy") is not None for r in runs) else None
    return out


def measure(load: int, plan: dict[str, dict], cfg: dict, rounds: int) -> dict[str, dict]:
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
    runs: dict[str, list[dict]] = {name: [] for name in plan}
    try:
        time.sleep(1.0 if load else 0.0)  # let the hogs be seen as load
        for r in range(rounds):
            order = list(plan) if r % 2 == 0 else list(reversed(plan))
            for name in order:
                runs[name] += run_variant(plan[name], cfg)
                print(f"  {load} hogs, round {r + 1}: {name} done", file=sys.stderr)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    return {name: summarise(v) for name, v in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round x 2 reps, loads 0 1 2")
    parser.add_argument("--hogs", type=int, nargs="+", default=[0, 1, 2], help="busy-loop processes per load level")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=600)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--only", nargs="+", default=None, help="run only these variants (names as printed)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds a variant's child may take; past it, it counts as a prompt read in that time")
    parser.add_argument("--build", action="append", default=[], metavar="NAME=PYTHON",
                        help="another llama-cpp-python build to compare (its venv's python)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.reps = 1, 2
    builds = dict(b.split("=", 1) for b in args.build)

    from chatharuhi.backends.llama_cpp.worker import physical_cores
    from chatharuhi.models.embedded import embedded_model

    cores = physical_cores()
    plan = variants(cores, builds)
    if args.only:
        unknown = sorted(set(args.only) - set(plan))
        if unknown:
            parser.error(f"unknown variant(s) {', '.join(unknown)}; available: {', '.join(plan)}")
        plan = {name: spec for name, spec in plan.items() if name in args.only}
    cfg = {"model": str(embedded_model()), "n_ctx": N_CTX, "text": TEXT, "prompt": args.prompt,
           "max_tokens": args.max_tokens, "reps": args.reps, "timeout": args.timeout}
    print(f"{cores} physical cores, load average {os.getloadavg()[0]:.1f} at start; {args.rounds} rounds x "
          f"{args.reps} reps; {args.prompt}-token prompt, {args.max_tokens}-token replies", file=sys.stderr)
    table = {}
    for load in args.hogs:
        table[str(load)] = measure(load, plan, cfg, args.rounds)
        print(f"\n{load} busy-loop processes on {cores} cores")
        print(f"{'variant':32} {'prefill tok/s':>13} {'ttft p95 s':>10} {'decode tok/s':>12} {'ms/tok p95':>10}")
        for name, s in table[str(load)].items():
            extra = f"  threads {s['threads_chosen']}" if "threads_chosen" in s else ""
            extra += f"  ({s['timed_out']} timed out)" if s["timed_out"] else ""
            print(f"{name:32} {s['prefill_tok_s']:13.1f} {s['ttft_p95_s']:10.2f} {s['decode_tok_s']:12.1f} "
                  f"{s['decode_ms_p95']:10.1f}{extra}")
    result = {"cores": cores, "prompt_tokens": args.prompt, "max_tokens": args.max_tokens, "rounds": args.rounds,
              "reps": args.reps, "loads": table}
    for load, rows in table.items():  # ours against every other variant, same run: {variant: [prefill, decode]}
        if "ours" in rows:
            result[f"ours_over_hogs{load}"] = {
                name: [round(rows["ours"][k] / row[k], 3) if row[k] else None for k in ("prefill_tok_s", "decode_tok_s")]
                for name, row in rows.items() if name != "ours"}
    for load, rows in table.items():
        for name in builds:
            for t in sorted({cores, 1}):
                ours_build, portable = rows.get(f"{name}-{t}t"), rows.get(f"default-{t}t")
                if ours_build and portable:
                    result[f"{name}_over_portable_{t}t_hogs{load}"] = {
                        k: round(ours_build[k] / portable[k], 3) if portable[k] else None
                        for k in ("prefill_tok_s", "decode_tok_s")}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
