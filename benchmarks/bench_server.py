"""Load benchmark of ``chatharuhi serve``: N concurrent streaming clients against an instant upstream.

Run from the repository root:  python benchmarks/bench_server.py [--concurrency 10 50 200] [--requests 3]

Three processes, as in production: the upstream (``tests/openai_stub.py``'s StubOpenAIServer, which
answers at once), the server (``python -m chatharuhi serve --embedder hash``, so query embedding costs
~nothing; its embed time is reported separately anyway), and this script's clients (httpx2, async).
For each N, N clients each send ``--requests`` streamed chat completions back to back.

Per turn, "framework overhead" = the client's time to first byte minus the upstream's time to first
chunk as the server measured it (the ``Server-Timing: upstream`` header). It includes everything the
framework adds: HTTP parsing, retrieval, packing, token counting, thread hand-offs, and queueing when
the server is saturated. ``server_overhead`` is the same without the client side (the server's own
``ttfb`` minus ``upstream``). Peak RSS is the server process's. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2
import psutil

REPO = Path(__file__).resolve().parents[1]
STUB_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from openai_stub import StubOpenAIServer
with StubOpenAIServer("春日:「外星人？今天就去找！SOS团全员出动！」", chunk_size=8) as stub:
    print(stub.base_url, flush=True)
    while True:
        time.sleep(3600)
"""
QUERIES = ["我们去找外星人吧", "SOS团今天做什么？", "你相信时间旅行吗？", "长门为什么总是不说话？",
           "团员迟到要罚什么？"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))], 3)


def timing(header: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"(\w+);dur=([\d.]+)", header or "")}


async def one_client(client: httpx2.AsyncClient, n: int, requests: int, results: list, errors: list) -> None:
    for i in range(requests):
        body = {"model": "haruhi", "stream": True, "messages": [{"role": "user", "content": QUERIES[(n + i) % 5]}]}
        start = time.perf_counter()
        try:
            async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                if r.status_code != 200:
                    errors.append(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
                    continue
                ttfb = None
                text = []
                async for line in r.aiter_lines():
                    if ttfb is None:
                        ttfb = (time.perf_counter() - start) * 1e3
                    if line.startswith("data: {"):
                        data = json.loads(line[6:])
                        if "error" in data:
                            raise RuntimeError(data["error"]["message"])
                        text.append(data["choices"][0]["delta"].get("content") or "")
                    elif line == "data: [DONE]":
                        break
                else:
                    raise RuntimeError("stream ended without [DONE]")
            total = (time.perf_counter() - start) * 1e3
            if not "".join(text):
                raise RuntimeError("empty reply")
            results.append((ttfb, total, timing(r.headers.get("server-timing"))))
        except Exception as exc:  # counted, not fatal: errors are one of the figures
            errors.append(f"{type(exc).__name__}: {exc}")


async def run_level(base_url: str, concurrency: int, requests: int) -> dict:
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(base_url=base_url, limits=limits, timeout=120) as client:
        await one_client(client, 0, 1, [], [])  # warm-up: builds the character's index
        results: list = []
        errors: list = []
        start = time.perf_counter()
        await asyncio.gather(*(one_client(client, n, requests, results, errors) for n in range(concurrency)))
        wall = time.perf_counter() - start
    overhead = [ttfb - t.get("upstream", 0.0) for ttfb, _, t in results]
    server_overhead = [t["ttfb"] - t.get("upstream", 0.0) for _, _, t in results if "ttfb" in t]
    return {
        "concurrency": concurrency, "requests": len(results) + len(errors), "errors": len(errors),
        "error_examples": sorted(set(errors))[:3], "wall_s": round(wall, 3),
        "requests_per_s": round(len(results) / wall, 1) if wall else None,
        "overhead_ms_p50": pct(overhead, 50), "overhead_ms_p95": pct(overhead, 95),
        "server_overhead_ms_p50": pct(server_overhead, 50), "server_overhead_ms_p95": pct(server_overhead, 95),
        "upstream_ms_p50": pct([t.get("upstream", 0.0) for _, _, t in results], 50),
        "embed_ms_p50": pct([t.get("embed", 0.0) for _, _, t in results], 50),
        "ttfb_ms_p50": pct([r[0] for r in results], 50), "ttfb_ms_p95": pct([r[0] for r in results], 95),
        "total_ms_p95": pct([r[1] for r in results], 95),
    }


class PeakRSS(threading.Thread):
    """Samples a process's resident memory every 20 ms."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.proc, self.peak, self.stop = psutil.Process(pid), 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.02)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[10, 50, 200])
    ap.add_argument("--requests", type=int, default=3, help="streamed turns per client (default 3)")
    args = ap.parse_args()

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
                                   "openai", "--base-url", upstream, "--embedder", "hash", "--log-level", "warning"],
                                  env=env, cwd=REPO)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx2.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.1)
        rss = PeakRSS(server.pid)
        rss.start()
        levels = []
        for n in args.concurrency:
            level = asyncio.run(run_level(base, n, args.requests))
            level["peak_rss_mb"] = round(rss.peak / 2**20, 1)
            levels.append(level)
            print(f"N={n:>4}: {level['requests_per_s']:>7} req/s  overhead p50 {level['overhead_ms_p50']} ms  "
                  f"p95 {level['overhead_ms_p95']} ms  (server-side p95 {level['server_overhead_ms_p95']} ms)  "
                  f"errors {level['errors']}  peak RSS {level['peak_rss_mb']} MB", flush=True)
        rss.stop.set()
    finally:
        for p in (server, stub):
            if p is not None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
    top = levels[-1]
    summary = {"bench": "server", "cpu_count": os.cpu_count(), "levels": levels,
               "max_concurrency": top["concurrency"], "errors_at_max": top["errors"],
               "overhead_ms_p95_at_max": top["overhead_ms_p95"],
               "target_met": top["errors"] == 0 and (top["overhead_ms_p95"] or 1e9) < 20,
               "median_requests_per_s": statistics.median(lv["requests_per_s"] or 0 for lv in levels)}
    print(json.dumps(summary, ensure_ascii=False))


if __name__ == "__main__":
    main()
