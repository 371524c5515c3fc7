"""The embedded model through chatharuhi's llama_cpp backend versus llama-cpp-python called directly.

Run from the repository root:  python benchmarks/bench_local.py [--rounds 3] [--reps 4] [--max-tokens 96]

The prompt is a real packed chatharuhi prompt (the built-in ``sherlock`` character, hash embedder, so
no embedding model is loaded). Each side runs in its own child process (clean peak RSS), the sides
alternate for ``--rounds`` rounds, and each child times ``--reps`` greedy generations with the KV
cache reset before each, so every rep pays the whole prompt. Same sampling on both sides
(temperature 0, repeat_penalty 1.1, llama-cpp's defaults otherwise), same n_ctx and threads.

Figures: load_s (constructor: for us including the cached hash check), ttft_s (call to first
non-empty chunk), decode_tok_s (tokens after the first / time after the first), rss_mb_peak. The
last line is one JSON object; ``speed_ratio`` = our decode tok/s / raw decode tok/s (target >= 0.95).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
N_CTX = 4096
QUERY = "Holmes, tell me everything you deduced about the visitor who came this morning, step by step."


def build_prompt(top_k: int) -> list[dict]:
    """A packed prompt for the sherlock character, counted with the embedded model's own counter."""
    from chatharuhi import ChatHaruhi
    from chatharuhi.backends.llama_cpp import LlamaCppBackend

    backend = LlamaCppBackend(n_ctx=N_CTX)
    bot = ChatHaruhi(role="sherlock", llm=backend, embedder="hash", top_k=top_k)
    plan = bot.prepare(QUERY)
    backend.close()
    return [m.as_dict() for m in plan.messages]


def child(side: str, prompt_file: str, reps: int, max_tokens: int, threads: int | None) -> dict:
    """Load one side, time ``reps`` generations; return the figures."""
    messages = json.loads(Path(prompt_file).read_text(encoding="utf-8"))
    params = {"max_tokens": max_tokens, "temperature": 0.0, "repeat_penalty": 1.1, "seed": 0}
    t0 = time.perf_counter()
    if side == "ours":
        from chatharuhi.backends.llama_cpp import LlamaCppBackend
        from chatharuhi.types import Message

        backend = LlamaCppBackend(n_ctx=N_CTX, n_threads=threads)
        llm = backend.llm
        msgs = [Message(m["role"], m["content"]) for m in messages]

        def generate():
            return backend.stream(msgs, **params)
    else:
        from llama_cpp import Llama

        from chatharuhi.backends.embedded import embedded_model_path

        llm = Llama(model_path=str(embedded_model_path()), n_ctx=N_CTX, n_threads=threads, seed=0, verbose=False)

        def generate():
            for chunk in llm.create_chat_completion(messages, stream=True, **params):
                text = chunk["choices"][0]["delta"].get("content")
                if text:
                    yield text
    load_s = time.perf_counter() - t0
    runs = []
    for _ in range(reps):
        llm.reset()
        pieces, start = [], time.perf_counter()
        first = None
        for text in generate():
            if first is None:
                first = time.perf_counter()
            pieces.append(text)
        end = time.perf_counter()
        out = "".join(pieces)
        tokens = len(llm.tokenize(out.encode("utf-8"), add_bos=False))
        runs.append({"ttft_s": first - start, "decode_tok_s": (tokens - 1) / (end - first) if tokens > 1 else None,
                     "tokens": tokens, "text": out})
    return {"side": side, "load_s": load_s, "runs": runs,
            "rss_mb_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--top-k", type=int, default=12, help="scenes in the prompt (0: system prompt + query only)")
    parser.add_argument("--threads", type=int, default=None, help="n_threads (default: llama-cpp's own choice)")
    parser.add_argument("--child", choices=["ours", "raw"], help=argparse.SUPPRESS)
    parser.add_argument("--prompt-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.prompt_file, args.reps, args.max_tokens, args.threads)))
        return

    home = tempfile.mkdtemp(prefix="bench-local-")
    os.environ["CHATHARUHI_HOME"] = home
    messages = build_prompt(args.top_k)
    prompt_file = Path(home) / "prompt.json"
    prompt_file.write_text(json.dumps(messages, ensure_ascii=False), encoding="utf-8")
    from chatharuhi.backends.llama_cpp import LlamaCppBackend
    from chatharuhi.types import Message

    backend = LlamaCppBackend(n_ctx=N_CTX)  # also verifies the hash once, so children read the cache
    prompt_tokens = backend.token_counter().count_messages([Message(m["role"], m["content"]) for m in messages])
    backend.close()
    print(f"prompt: {prompt_tokens} tokens ({len(messages)} messages); max_tokens {args.max_tokens}; "
          f"{args.rounds} rounds x {args.reps} reps per side", file=sys.stderr)

    results: dict[str, list[dict]] = {"ours": [], "raw": []}
    for r in range(args.rounds):
        for side in (("ours", "raw") if r % 2 == 0 else ("raw", "ours")):
            cmd = [sys.executable, __file__, "--child", side, "--prompt-file", str(prompt_file),
                   "--reps", str(args.reps), "--max-tokens", str(args.max_tokens)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ).stdout
            results[side].append(json.loads(out.strip().splitlines()[-1]))
            print(f"  round {r + 1} {side} done", file=sys.stderr)

    summary = {}
    for side, children in results.items():
        runs = [run for c in children for run in c["runs"]]
        summary[side] = {
            "load_s": statistics.median(c["load_s"] for c in children),
            "ttft_s": statistics.median(run["ttft_s"] for run in runs),
            "decode_tok_s": statistics.median(run["decode_tok_s"] for run in runs if run["decode_tok_s"]),
            "rss_mb_peak": max(c["rss_mb_peak"] for c in children),
            "tokens": statistics.median(run["tokens"] for run in runs),
        }
    same_text = {run["text"] for c in results["ours"] for run in c["runs"]} == \
        {run["text"] for c in results["raw"] for run in c["runs"]}
    print(f"{'':6} {'load s':>8} {'ttft s':>8} {'decode tok/s':>13} {'peak RSS MB':>12} {'tokens':>7}")
    for side, s in summary.items():
        print(f"{side:6} {s['load_s']:8.3f} {s['ttft_s']:8.3f} {s['decode_tok_s']:13.1f} {s['rss_mb_peak']:12.0f} "
              f"{s['tokens']:7.0f}")
    ratio = summary["ours"]["decode_tok_s"] / summary["raw"]["decode_tok_s"]
    ttft_ratio = summary["raw"]["ttft_s"] / summary["ours"]["ttft_s"]
    print(f"decode speed ours/raw = {ratio:.3f} (target >= 0.95: {'met' if ratio >= 0.95 else 'NOT met'}); "
          f"ttft raw/ours = {ttft_ratio:.3f}; identical greedy text on both sides: {same_text}")
    print(json.dumps({"prompt_tokens": prompt_tokens, "max_tokens": args.max_tokens, "speed_ratio": round(ratio, 3),
                      "ttft_ratio": round(ttft_ratio, 3), "same_text": same_text,
                      **{f"{side}_{k}": round(v, 4) for side, s in summary.items() for k, v in s.items()}}))


if __name__ == "__main__":
    main()
