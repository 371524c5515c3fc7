"""Load benchmark of ``chatharuhi serve``: the async upstream path against the older thread path, same run.

Run from the repository root:
    python benchmarks/bench_server.py [--concurrency 10 50 200] [--requests 3] [--rounds 3] [--soak 5000]
Issue 15's scenarios: ``--scenario heavy`` (one heavy request among 20 normal ones) and ``--scenario rss``
(resident memory over 5,000 requests with large unique texts); see ``bench_hardening.py``.

Processes, as in production: the upstream (a minimal asyncio OpenAI-compatible stub that answers at
once, so the upstream is never the bottleneck), one server per path (``python -m chatharuhi serve
--embedder hash --upstream-io async|thread``), and this script's clients (httpx2, async). For each N,
each path in turn gets N clients that each send ``--requests`` streamed chat completions back to back;
the paths alternate level by level (who goes first swaps every round), so both see the same machine
load, and every ratio (async / thread) is the median over ``--rounds`` of ratios taken within a round.
``server_cpu_ms_per_request`` (the server process's CPU time per request) is the figure least moved
by other work on a shared machine.

Per turn, "framework overhead" = the client's time to first byte minus the upstream's time to first
chunk as the server measured it (the ``Server-Timing: upstream`` header). It includes everything the
framework adds: HTTP parsing, retrieval, packing, token counting, thread hand-offs, and queueing when
the server is saturated. ``server_overhead`` is the same without the client side (the server's own
``ttfb`` minus ``upstream``). Peak RSS is the server process's. ``--soak`` then sends that many more
requests (50 at a time) to the async server and samples its RSS every 500: flat memory means no leak.
The load average before and after is printed: the machine may be shared. The last line is one JSON object.
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
PATHS = ("thread", "async")  # the older path first: it is the baseline of every ratio
RATIO_KEYS = ("requests_per_s", "overhead_ms_p50", "overhead_ms_p95", "server_overhead_ms_p95",
              "server_cpu_ms_per_request")
# A minimal OpenAI-compatible upstream on asyncio: keep-alive, chunked SSE, 5 content chunks, no sleeps.
STUB_SCRIPT = r"""
import asyncio, json, sys

REPLY = "春日:「外星人？今天就去找！SOS团全员出动！」"

def sse(delta, finish=None):
    chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "stub",
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    data = ("data: " + json.dumps(chunk, ensure_ascii=False) + "\n\n").encode()
    return b"%x\r\n%s\r\n" % (len(data), data)

BODY = (sse({"role": "assistant", "content": ""})
        + b"".join(sse({"content": REPLY[i:i + 8]}) for i in range(0, len(REPLY), 8))
        + sse({}, "stop") + b"e\r\ndata: [DONE]\n\n\r\n" + b"0\r\n\r\n")
HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
        b"transfer-encoding: chunked\r\n\r\n")

async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            writer.write(HEAD + BODY)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", flush=True)
    await server.serve_forever()

asyncio.run(main())
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


def start_server(upstream: str, path: str, env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "chatharuhi", "serve", "--port", str(port), "--backend", "openai",
                               "--base-url", upstream, "--embedder", "hash", "--log-level", "warning",
                               "--upstream-io", path], env=env, cwd=REPO)
    return server, f"http://127.0.0.1:{port}"


def wait_ready(server: subprocess.Popen, base: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx2.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise SystemExit("a server did not start")
        time.sleep(0.1)


async def soak(base_url: str, total: int, pid: int, concurrency: int = 50, every: int = 500) -> dict:
    """``total`` streamed requests, ``concurrency`` at a time; the server's RSS after every ``every``."""
    proc, samples, errors, done = psutil.Process(pid), [], [], 0
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(base_url=base_url, limits=limits, timeout=120) as client:
        while done < total:
            batch = min(every, total - done)
            per, extra = divmod(batch, concurrency)
            results: list = []
            await asyncio.gather(*(one_client(client, n, per + (n < extra), results, errors)
                                   for n in range(concurrency)))
            done += batch
            samples.append((done, round(proc.memory_info().rss / 2**20, 1)))
    rss = [mb for _, mb in samples]
    settled = rss[1:] or rss  # the first 500 warm caches and pools up
    return {"requests": total, "errors": len(errors), "error_examples": sorted(set(errors))[:3],
            "rss_mb_every_500": rss, "rss_growth_mb_after_first_1000": round(max(settled) - settled[0], 1)}


def measure(server: tuple[subprocess.Popen, str], n: int, requests: int) -> dict:
    """One level on one server, with the CPU it and this client spent per request (robust to other load)."""
    proc, url = psutil.Process(server[0].pid), server[1]
    cpu0, mine = sum(proc.cpu_times()[:2]), sum(os.times()[:2])
    level = asyncio.run(run_level(url, n, requests))
    done = max(1, level["requests"] + 1)  # + the warm-up request
    level["server_cpu_ms_per_request"] = round((sum(proc.cpu_times()[:2]) - cpu0) * 1e3 / done, 2)
    level["client_cpu_ms_per_request"] = round((sum(os.times()[:2]) - mine) * 1e3 / done, 2)
    return level


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[10, 50, 200])
    ap.add_argument("--requests", type=int, default=3, help="streamed turns per client (default 3)")
    ap.add_argument("--rounds", type=int, default=3, help="repeat every level this many times; ratios are medians")
    ap.add_argument("--soak", type=int, default=5000, help="requests for the RSS soak of the async path (0: none)")
    ap.add_argument("--scenario", choices=["load", "heavy", "rss"], default="load",
                    help="load (default): the concurrency levels above; heavy: one heavy request among 20 normal "
                    "ones; rss: memory over --rss-requests requests with large unique texts (bench_hardening.py)")
    ap.add_argument("--rss-requests", type=int, default=5000)
    args = ap.parse_args()
    if args.scenario != "load":
        from bench_hardening import run

        run(args.scenario, rss_requests=args.rss_requests)
        return

    home = tempfile.mkdtemp(prefix="chatharuhi-bench-")
    env = {**os.environ, "CHATHARUHI_HOME": home, "OPENAI_API_KEY": "bench", "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1"}
    env.pop("CHATHARUHI_API_KEY", None)
    load_before = [round(x, 2) for x in os.getloadavg()]
    stub = subprocess.Popen([sys.executable, "-c", STUB_SCRIPT], stdout=subprocess.PIPE, text=True, env=env)
    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    levels: dict[str, list[dict]] = {path: [] for path in PATHS}
    soaked = None
    try:
        upstream = stub.stdout.readline().strip()
        for path in PATHS:
            servers[path] = start_server(upstream, path, env)
        for path in PATHS:
            wait_ready(*servers[path])
        rss = {path: PeakRSS(servers[path][0].pid) for path in PATHS}
        for sampler in rss.values():
            sampler.start()
        for path in PATHS:  # warm-up, not measured: index, connection pools, first-use imports
            asyncio.run(run_level(servers[path][1], 10, 2))
        for round_no in range(args.rounds):
            for n in args.concurrency:
                # alternate, swapping who goes first each round: both paths see the same load
                for path in (PATHS if round_no % 2 == 0 else PATHS[::-1]):
                    level = measure(servers[path], n, args.requests)
                    level.update(round=round_no, peak_rss_mb=round(rss[path].peak / 2**20, 1))
                    levels[path].append(level)
                    print(f"r{round_no} {path:>6} N={n:>4}: {level['requests_per_s']:>7} req/s  overhead p50 "
                          f"{level['overhead_ms_p50']} ms  p95 {level['overhead_ms_p95']} ms  (server-side p95 "
                          f"{level['server_overhead_ms_p95']} ms)  server CPU {level['server_cpu_ms_per_request']} "
                          f"ms/req (client {level['client_cpu_ms_per_request']})  errors {level['errors']}  "
                          f"peak RSS {level['peak_rss_mb']} MB", flush=True)
        for sampler in rss.values():
            sampler.stop.set()
        if args.soak:
            soaked = asyncio.run(soak(servers["async"][1], args.soak, servers["async"][0].pid))
            print(f" async soak: {soaked['requests']} requests, errors {soaked['errors']}, RSS MB every 500: "
                  f"{soaked['rss_mb_every_500']}", flush=True)
    finally:
        for p in [*(sv for sv, _ in servers.values()), stub]:
            if p is not None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
    load_after = [round(x, 2) for x in os.getloadavg()]
    def ratio(a, b):
        return round(a / b, 2) if a and b else None

    def median_ratio(key: str, n: int) -> float | None:
        """The median over rounds of async/thread for one figure at concurrency n (pairs from the same round)."""
        pairs = [(a[key], t[key]) for a, t in zip(levels["async"], levels["thread"]) if a["concurrency"] == n]
        values = [ratio(a, t) for a, t in pairs if ratio(a, t) is not None]
        return round(statistics.median(values), 2) if values else None

    per_n = {n: {key: median_ratio(key, n) for key in RATIO_KEYS} for n in args.concurrency}
    top = per_n[args.concurrency[-1]]
    summary = {"bench": "server", "cpu_count": os.cpu_count(), "loadavg_before": load_before,
               "loadavg_after": load_after, "rounds": args.rounds, "levels": levels, "soak": soaked,
               "median_ratios_async_over_thread": per_n, "max_concurrency": args.concurrency[-1],
               "throughput_ratio_at_max": top["requests_per_s"], "p50_overhead_ratio_at_max": top["overhead_ms_p50"],
               "p95_overhead_ratio_at_max": top["overhead_ms_p95"],
               "server_cpu_ratio_at_max": top["server_cpu_ms_per_request"],
               "errors": sum(lv["errors"] for path in PATHS for lv in levels[path]) + (soaked or {}).get("errors", 0)}
    summary["target_met"] = (summary["errors"] == 0 and (top["requests_per_s"] or 0) >= 2
                             and (top["overhead_ms_p95"] or 9) <= 1 / 3)
    for n, r in per_n.items():
        print(f"N={n:>4} median async/thread over {args.rounds} rounds: throughput x{r['requests_per_s']}, overhead "
              f"p50 x{r['overhead_ms_p50']} p95 x{r['overhead_ms_p95']}, server CPU/request "
              f"x{r['server_cpu_ms_per_request']}", flush=True)
    print(f"load average {load_before} -> {load_after} on {os.cpu_count()} CPUs", flush=True)
    print(json.dumps(summary, ensure_ascii=False))


if __name__ == "__main__":
    main()
