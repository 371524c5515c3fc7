"""The cost of several GGUF LoRA adapters on one llama.cpp model, chosen per call.

Run from the repository root (the figures that matter are ratios measured in the same run):

    nice -n 10 python benchmarks/bench_adapters.py --rounds 5

The model is the embedded one (SmolLM2-135M-Instruct) in its worker; the adapters are two random
rank-8 q/v LoRAs for it built here (``tests/helpers/smol_lora.py``; needs torch, peft and gguf). It measures:

1. the time to load an adapter into the worker (``add_adapter``);
2. a reply on the same prompt (a system prompt plus a few hundred tokens of scenes) with the same
   adapter as the call before (llama.cpp's KV cache holds the prompt) against one right after a
   switch of adapter (the cache is dropped: the prompt is read in full), and the base model with no
   adapter against an adapter, both read cold (what applying a LoRA costs per token).

The last line is one JSON object with medians and the ratios switch_over_same_ttft and
adapter_over_base_decode.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCENE = ("Watson:「Where were you last night, Holmes?」\nHolmes:「At the club, Watson, watching a man who "
         "pretends to be a retired colonel. His boots say otherwise.」\n")


def _reply(backend, messages, adapter, cold: bool) -> dict:
    if cold:
        backend.reset_cache()
    generation = backend.stream(messages, max_tokens=16, adapter=adapter)
    "".join(generation)
    stats = generation.stats
    return {"ttft": stats["first_token_s"], "prefill_tokens": stats["prefill_tokens"],
            "decode_tok_s": stats["decode_tokens"] / max(1e-9, stats["total_s"] - stats["first_token_s"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    from chatharuhi.backends.llama_cpp.backend import LlamaCppBackend
    from chatharuhi.types import Message
    from helpers.smol_lora import smol_lora

    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for seed in (1, 2):
            folder = Path(tmp) / f"lora{seed}"
            folder.mkdir()
            files.append(smol_lora(folder, seed))
        backend = LlamaCppBackend(n_ctx=2048, temperature=0)
        try:
            start = time.perf_counter()
            a = backend.add_adapter(files[0])
            load_s = time.perf_counter() - start
            b = backend.add_adapter(files[1])
            messages = [Message("system", "You are Sherlock Holmes.\n" + SCENE * 8),
                        Message("user", "Watson:「What did the boots say?」")]
            rows: dict[str, list[dict]] = {"same": [], "switch": [], "base_cold": [], "adapter_cold": []}
            for _ in range(args.rounds):
                _reply(backend, messages, a, cold=False)
                rows["same"].append(_reply(backend, messages, a, cold=False))  # a after a: cache kept
                rows["switch"].append(_reply(backend, messages, b, cold=False))  # b after a: cache dropped
                rows["base_cold"].append(_reply(backend, messages, None, cold=True))
                rows["adapter_cold"].append(_reply(backend, messages, a, cold=True))
        finally:
            backend.close()

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[name])

    out = {"adapter_load_ms": round(load_s * 1e3, 1), "rounds": args.rounds,
           "prompt_tokens": rows["switch"][0]["prefill_tokens"]}
    for name in rows:
        out[f"{name}_ttft_ms"] = round(median(name, "ttft") * 1e3, 1)
        out[f"{name}_prefill_tokens"] = median(name, "prefill_tokens")
        out[f"{name}_decode_tok_s"] = round(median(name, "decode_tok_s"), 1)
    out["switch_over_same_ttft"] = round(median("switch", "ttft") / median("same", "ttft"), 2)
    out["adapter_over_base_ttft"] = round(median("adapter_cold", "ttft") / median("base_cold", "ttft"), 2)
    out["adapter_over_base_decode"] = round(median("adapter_cold", "decode_tok_s") / median("base_cold", "decode_tok_s"),
                                            2)
    for key, value in out.items():
        print(f"{key:28} {value}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
