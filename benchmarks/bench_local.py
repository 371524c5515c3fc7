"""Local model speed on llama.cpp's own server (xllamacpp), against xllamacpp driven directly and the old worker.

Run from the repository root (the ratios are what matter on a shared machine; the JSON records its load):

    python benchmarks/bench_local.py --quick           # a few minutes
    python benchmarks/bench_local.py                   # more rounds and turns
    python benchmarks/bench_local.py --install         # also README command 1 in a fresh venv (network)

The model is the embedded one (SmolLM2-135M-Instruct Q4_1), greedy. In one run it measures:

1. ``direct``: prefill and decode, ours (``LlamaCppBackend``: its worker, the HTTP hop, our exact count) against
   xllamacpp's ``Server`` driven directly in a child process (``handle_chat_completions`` streaming), on the
   same prompt (turn 1 of a ``sherlock`` conversation packed at the full budgets, story 1,500 / history 1,200),
   the same threads and one slot; no cached prefix on either side. Sides alternate for ``--rounds`` rounds.
   Prefill tok/s = prompt tokens / time to first token; decode tok/s = tokens after the first / their time.
2. ``serve`` and ``demo``: four users chatting at once with the embedded model, each its own ``sherlock``
   conversation of ``--turns`` turns, through ``chatharuhi serve`` (the openai SDK, streaming) and through the
   Gradio demo (``gradio_client``: /start, /pick, /send), each against the old serial worker (llama-cpp-python,
   one generation at a time) in the same run: p50/p95 time to first token and the replies' total throughput.
   The old side is the package as it was before the change (``git archive`` of the commit before the one that
   deleted ``worker_main.py``) run from a temporary folder; it needs llama-cpp-python installed.
3. ``kept``: four ``ChatHaruhi`` users on one embedded backend at the full budgets, each its own conversation,
   turns interleaved (user 1, 2, 3, 4, then turn 2 of each...): time to first token of a turn that kept its
   story against turn 1.
4. ``adapters``: two characters with their own LoRA (real GGUFs from tests/helpers/smol_lora.py; needs torch and
   peft), interleaved: time to first token when going back to a character whose prompt was read before, against
   its first read, ours and the old worker's (which re-read the prompt after every switch).
5. ``install`` (``--install``): README command 1's install in a fresh venv with an empty pip cache, and with
   ``--install-old`` the old command (llama-cpp-python built from source) from the old commit's README.

The last line is one JSON object: ours_over_direct_prefill, ours_over_direct_decode, serve/demo p50/p95 time to
first token and throughput for new and old, kept_over_turn1_ttft, adapter_back_over_first_ttft, install_s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
N_CTX = 4096
STORY, HISTORY = 1500, 1200
QUERIES = [
    "Holmes, tell me everything you deduced about the visitor who came this morning.",
    "Why did you say he had been in Afghanistan?",
    "And what about the letter he left on the table?",
    "Should we call Inspector Lestrade now, or wait until tonight?",
    "What will you do if the man never comes back?",
]
DIRECT_CHILD = r"""
import json, os, sys, time
import xllamacpp as xlc
cfg = json.loads(sys.stdin.read())
p = xlc.CommonParams()
p.model.path, p.n_ctx, p.n_parallel, p.verbosity = cfg["model"], cfg["n_ctx"], 1, 0
p.cpuparams.n_threads = p.cpuparams_batch.n_threads = cfg["threads"]
server = xlc.Server(p)
out = []
for i in range(cfg["reps"] + 1):  # the first one warms up and is dropped
    marks, usage = [], {}
    def chunk(c):
        choice = (c.get("choices") or [{}])[0]
        if (choice.get("delta") or {}).get("content"):
            marks.append(time.perf_counter())
        if c.get("usage"):
            usage.update(c["usage"], timings=c.get("timings", {}))
    t0 = time.perf_counter()
    server.handle_chat_completions({"messages": cfg["messages"], "max_tokens": cfg["max_tokens"], "temperature": 0,
                                    "stream": True, "cache_prompt": False, "stream_options": {"include_usage": True}},
                                   chunk)
    if i:
        out.append({"ttft": marks[0] - t0, "prompt": usage["prompt_tokens"], "decode": usage["completion_tokens"],
                    "decode_s": marks[-1] - marks[0], "server_prefill": usage["timings"].get("prompt_per_second"),
                    "server_decode": usage["timings"].get("predicted_per_second")})
print(json.dumps(out), flush=True)
os._exit(0)
"""
ADAPTER_CHILD = r"""
import json, sys, time
from chatharuhi.backends.llama_cpp.backend import LlamaCppBackend
from chatharuhi.types import Message
cfg = json.loads(sys.stdin.read())
backend = LlamaCppBackend(n_ctx=2048, temperature=0)
ids = [backend.add_adapter(path) for path in cfg["loras"]]  # before the timed part (ours restarts its worker)
chats = [[Message("system", text)] for text in cfg["systems"]]
out = []
for turn in range(cfg["turns"]):
    for who in range(len(ids)):
        chats[who].append(Message("user", cfg["queries"][turn % len(cfg["queries"])]))
        t0 = time.perf_counter()
        stream = backend.stream(chats[who], max_tokens=cfg["max_tokens"], adapter=ids[who])
        text = next(stream)
        ttft = time.perf_counter() - t0
        text += "".join(stream)
        chats[who].append(Message("assistant", text))
        out.append({"who": who, "turn": turn, "ttft": ttft, "reused": stream.stats.get("reused_tokens")})
backend.close()
print(json.dumps(out), flush=True)
"""


def load() -> float:
    return round(os.getloadavg()[0], 2)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(round(q * (len(values) - 1))))], 3) if values else float("nan")


def med(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def old_tree(where: Path) -> tuple[Path, str]:
    """The package as it was before the move to xllamacpp: the commit before the one that deleted worker_main.py."""
    gone = subprocess.run(["git", "rev-list", "-1", "HEAD", "--", "chatharuhi/backends/llama_cpp/worker_main.py"],
                          cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    old = f"{gone}^"
    archive = subprocess.run(["git", "archive", old, "chatharuhi", "characters", "prompts", "README.md", "pyproject.toml"], cwd=REPO,
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    sha = subprocess.run(["git", "rev-parse", "--short", old], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return where, sha


def packed_prompt(backend) -> list:
    from chatharuhi import ChatHaruhi

    bot = ChatHaruhi(role="sherlock", llm=backend, story_tokens=STORY, history_tokens=HISTORY, story_reuse=False)
    return [m.as_dict() for m in bot.prepare(QUERIES[0], role="Watson").messages]


# -- 1. ours against xllamacpp directly ------------------------------------------------------------------------
def direct(model: Path, messages: list, threads: int, reps: int, max_tokens: int) -> list[dict]:
    cfg = {"model": str(model), "n_ctx": N_CTX, "threads": threads, "reps": reps, "messages": messages,
           "max_tokens": max_tokens}
    r = subprocess.run([sys.executable, "-c", DIRECT_CHILD], input=json.dumps(cfg), capture_output=True, text=True,
                       timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def ours(backend, messages: list, reps: int, max_tokens: int) -> list[dict]:
    from chatharuhi.types import Message

    msgs = [Message(m["role"], m["content"]) for m in messages]
    out = []
    for i in range(reps + 1):
        backend.reset_cache()
        t0 = time.perf_counter()
        stream = backend.stream(msgs, max_tokens=max_tokens)
        next(stream)
        first = time.perf_counter()
        for _ in stream:
            pass
        end = time.perf_counter()
        s = stream.stats
        if i:
            out.append({"ttft": first - t0, "prompt": s["prompt_tokens"], "decode": s["decode_tokens"],
                        "decode_s": end - first, "server_prefill": s["prefill_tokens"] / max(s["prefill_s"], 1e-9),
                        "server_decode": s["decode_tokens"] / max(s["decode_s"], 1e-9)})
    return out


def rates(runs: list[dict]) -> dict:
    return {"prefill_tok_s": med([r["prompt"] / r["ttft"] for r in runs]),
            "decode_tok_s": med([(r["decode"] - 1) / max(r["decode_s"], 1e-9) for r in runs]),
            "ttft_s": med([r["ttft"] for r in runs]), "server_prefill_tok_s": med([r["server_prefill"] for r in runs]),
            "server_decode_tok_s": med([r["server_decode"] for r in runs]), "prompt_tokens": runs[0]["prompt"]}


# -- 2. four users through `chatharuhi serve` and the demo -------------------------------------------------------
def start(kind: str, tree: Path, home: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CHATHARUHI_"))}
    env.update(PYTHONPATH=str(tree), CHATHARUHI_HOME=str(home), GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen([sys.executable, "-m", "chatharuhi", kind, "--port", str(port)], cwd=tree, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import httpx

    url = f"http://127.0.0.1:{port}/" + ("v1/models" if kind == "serve" else "")
    for _ in range(1200):
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} from {tree} exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError(f"{kind} did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def together(users: int, work) -> tuple[list[dict], float]:
    """Run ``work(user)`` for every user on its own thread, all released at once; their records and the wall time."""
    records: list[dict] = []
    barrier = threading.Barrier(users + 1)
    errors: list[BaseException] = []

    def run(u: int) -> None:
        barrier.wait()
        try:
            records.extend(work(u))
        except BaseException as exc:  # noqa: BLE001 - reported after the run
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(u,)) for u in range(users)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return records, time.perf_counter() - t0


def serve_users(port: int, users: int, turns: int, max_tokens: int) -> tuple[list[dict], float]:
    import openai

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="local", timeout=1800, max_retries=0)

    def user(u: int) -> list[dict]:
        history, out = [], []
        for turn in range(turns):
            history.append({"role": "user", "content": QUERIES[(turn + u) % len(QUERIES)]})
            t0 = time.perf_counter()
            first, text = None, ""
            for chunk in client.chat.completions.create(model="sherlock", messages=history, stream=True,
                                                        max_tokens=max_tokens, user="Watson"):
                piece = chunk.choices[0].delta.content if chunk.choices else None
                if piece:
                    first = first or time.perf_counter()
                    text += piece
            history.append({"role": "assistant", "content": text})
            out.append({"ttft": (first or time.perf_counter()) - t0, "chars": len(text), "turn": turn})
        return out

    user(0)  # warm: the index, the embedder and the model's first reply, not measured
    return together(users, user)


def demo_users(port: int, users: int, turns: int) -> tuple[list[dict], float]:
    from gradio_client import Client

    def chat_of(output) -> list | None:
        for item in output if isinstance(output, (list, tuple)) else ():
            value = item.get("value") if isinstance(item, dict) else item
            if isinstance(value, list) and value and isinstance(value[0], dict) and "role" in value[0]:
                return value
        return None

    def text_of(message) -> str:
        content = message["content"]
        return "".join(p.get("text", "") for p in content) if isinstance(content, list) else str(content)

    def user(u: int) -> list[dict]:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        token = next(v for v in client.predict("", api_name="/start") if isinstance(v, str) and len(v) >= 32)
        client.predict("sherlock", "", api_name="/pick")
        out = []
        for turn in range(turns):
            t0 = time.perf_counter()
            job = client.submit(QUERIES[(turn + u) % len(QUERIES)], "Watson", token, api_name="/send")
            empty, first, last = None, None, ""
            for update in job:
                chat = chat_of(update)
                if not chat or chat[-1].get("role") != "assistant":
                    continue
                last = text_of(chat[-1])
                empty = last if empty is None else empty
                if first is None and len(last) > len(empty):
                    first = time.perf_counter()
            out.append({"ttft": (first or time.perf_counter()) - t0, "chars": len(last), "turn": turn})
        return out

    user(0)
    return together(users, user)


def summary(records: list[dict], wall: float) -> dict:
    ttft = [r["ttft"] for r in records]
    return {"ttft_p50_s": pct(ttft, 0.5), "ttft_p95_s": pct(ttft, 0.95), "replies": len(records),
            "chars_per_s": round(sum(r["chars"] for r in records) / wall, 1), "wall_s": round(wall, 1)}


def users_through(kind: str, trees: dict[str, Path], home: Path, users: int, turns: int, max_tokens: int) -> dict:
    out = {}
    for side, tree in trees.items():
        port = free_port()
        proc = start(kind, tree, home, port)
        try:
            before = load()
            records, wall = (serve_users(port, users, turns, max_tokens) if kind == "serve"
                             else demo_users(port, users, turns))
            out[side] = {**summary(records, wall), "load": [before, load()]}
        finally:
            stop(proc)
        print(f"{kind} {side}: {out[side]}", file=sys.stderr, flush=True)
    return out


# -- 3. kept-story turns with four users interleaved ------------------------------------------------------------
def kept(backend, users: int, turns: int, max_tokens: int) -> dict:
    from chatharuhi import ChatHaruhi

    bots = [ChatHaruhi(role="sherlock", llm=backend, story_tokens=STORY, history_tokens=HISTORY) for _ in range(users)]
    rows = []
    for turn in range(turns):
        for u, bot in enumerate(bots):
            t0 = time.perf_counter()
            reply = bot.stream(QUERIES[(turn + u) % len(QUERIES)], role="Watson", max_tokens=max_tokens)
            chunks = iter(reply)
            next(chunks)
            ttft = time.perf_counter() - t0
            for _ in chunks:
                pass
            tr = bot.last_trace
            rows.append({"user": u, "turn": turn + 1, "ttft": round(ttft, 3), "kept": tr.story_kept,
                         "reused": tr.reused_tokens, "prompt": tr.model_prompt_tokens})
    first = [r["ttft"] for r in rows if r["turn"] == 1]
    kept_rows = [r["ttft"] for r in rows if r["turn"] > 1 and r["kept"]]
    return {"rows": rows, "turn1_ttft_s": med(first), "kept_ttft_s": med(kept_rows),
            "kept_over_turn1_ttft": round(med(kept_rows) / med(first), 3) if kept_rows else None,
            "kept_turns": len(kept_rows)}


# -- 4. adapter switches ------------------------------------------------------------------------------------------
def adapters(trees: dict[str, Path], turns: int, max_tokens: int) -> dict:
    from helpers.smol_lora import smol_lora

    root = Path(tempfile.mkdtemp(prefix="bench-loras-"))
    loras = [str(smol_lora(root / str(seed), seed)) for seed in (1, 2)]
    cfg = {"loras": loras, "turns": turns, "max_tokens": max_tokens, "queries": QUERIES,
           "systems": ["You are Sherlock Holmes, the detective of 221B Baker Street. " * 30,
                       "You are Haruhi Suzumiya, the chief of the SOS Brigade at North High. " * 30]}
    out = {}
    for side, tree in trees.items():
        env = {**os.environ, "PYTHONPATH": str(tree), "CHATHARUHI_HOME": tempfile.mkdtemp(prefix="bench-home-")}
        r = subprocess.run([sys.executable, "-c", ADAPTER_CHILD], input=json.dumps(cfg), capture_output=True,
                           text=True, env=env, cwd=tree, timeout=1800)  # cwd: `-c` puts it first on sys.path
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-2000:])
        rows = json.loads(r.stdout.strip().splitlines()[-1])
        first = [x["ttft"] for x in rows if x["turn"] == 0]
        back = [x["ttft"] for x in rows if x["turn"] > 0]
        out[side] = {"first_ttft_s": med(first), "back_ttft_s": med(back),
                     "back_over_first_ttft": round(med(back) / med(first), 3),
                     "back_reused_tokens": [x["reused"] for x in rows if x["turn"] > 0]}
        print(f"adapters {side}: {out[side]}", file=sys.stderr, flush=True)
    shutil.rmtree(root, ignore_errors=True)
    return out


# -- 5. install -------------------------------------------------------------------------------------------------
def readme_install(readme: str) -> str:
    """README command 1's install part: its venv line up to (not including) ``chatharuhi demo``."""
    block = readme.split("# 1. install and run the main job", 1)[1].split("```", 1)[0].strip().splitlines()
    command = block[-1]
    return command.rsplit(" && chatharuhi demo", 1)[0]


def install(source: Path, command: str) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-install-"))
    clone = work / "chatharuhi"
    shutil.copytree(source, clone, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__"))
    env = {**os.environ, "PIP_CACHE_DIR": str(work / "pip-cache"), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("VIRTUAL_ENV", None)
    before = load()
    t0 = time.perf_counter()
    r = subprocess.run(["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True, timeout=7200)
    took = time.perf_counter() - t0
    shutil.rmtree(work, ignore_errors=True)
    return {"install_s": round(took, 1), "ok": r.returncode == 0, "load": [before, load()],
            **({} if r.returncode == 0 else {"error": r.stderr[-1000:]})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round x 2 reps, 3 turns, 24-token replies")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--only", nargs="*", default=["direct", "serve", "demo", "kept", "adapters"],
                        help="sections to run (default: all but install)")
    parser.add_argument("--install", action="store_true", help="also time README command 1 (fresh venv, no cache)")
    parser.add_argument("--install-old", action="store_true", help="and the old one (a llama-cpp-python build)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.reps, args.max_tokens, args.turns = 1, 2, 24, 3

    from chatharuhi.backends.llama_cpp.backend import LlamaCppBackend
    from chatharuhi.backends.llama_cpp.worker import physical_cores
    from chatharuhi.models.embedded import embedded_model

    result: dict = {"machine": {"cpus": os.cpu_count(), "physical_cores": physical_cores(), "load_start": load()}}
    work = Path(tempfile.mkdtemp(prefix="bench-local-"))
    home = work / "home"
    os.environ["CHATHARUHI_HOME"] = str(home)
    trees = {"new": REPO}
    if {"serve", "demo", "adapters"} & set(args.only) or args.install_old:
        (work / "old").mkdir()
        trees["old"], result["old_commit"] = old_tree(work / "old")
    model = embedded_model()
    threads = physical_cores()

    if "direct" in args.only:
        backend = LlamaCppBackend(n_ctx=N_CTX, n_parallel=1, n_threads=threads, temperature=0.0)
        messages = packed_prompt(backend)
        runs = {"ours": [], "direct": []}
        for _ in range(args.rounds):
            runs["direct"] += direct(model, messages, threads, args.reps, args.max_tokens)
            runs["ours"] += ours(backend, messages, args.reps, args.max_tokens)
        backend.close()
        a, b = rates(runs["ours"]), rates(runs["direct"])
        result["direct"] = {"ours": a, "xllamacpp": b, "threads": threads, "load": load()}
        result["ours_over_direct_prefill"] = round(a["prefill_tok_s"] / b["prefill_tok_s"], 3)
        result["ours_over_direct_decode"] = round(a["decode_tok_s"] / b["decode_tok_s"], 3)
        print(f"direct: {result['direct']}", file=sys.stderr, flush=True)

    for kind in ("serve", "demo"):
        if kind in args.only:
            result[kind] = r = users_through(kind, trees, home, args.users, args.turns, args.max_tokens)
            if "old" in r:
                result[f"{kind}_ttft_p50_new_over_old"] = round(r["new"]["ttft_p50_s"] / r["old"]["ttft_p50_s"], 3)
                result[f"{kind}_ttft_p95_new_over_old"] = round(r["new"]["ttft_p95_s"] / r["old"]["ttft_p95_s"], 3)
                result[f"{kind}_throughput_new_over_old"] = round(r["new"]["chars_per_s"] / r["old"]["chars_per_s"], 3)

    if "kept" in args.only:
        backend = LlamaCppBackend(n_ctx=N_CTX, temperature=0.0)
        result["kept"] = kept(backend, args.users, max(args.turns, 3), args.max_tokens)
        result["kept"]["n_parallel"] = backend.n_parallel
        result["kept_over_turn1_ttft"] = result["kept"]["kept_over_turn1_ttft"]
        backend.close()
        print(f"kept: {({k: v for k, v in result['kept'].items() if k != 'rows'})}", file=sys.stderr, flush=True)

    if "adapters" in args.only:
        result["adapters"] = adapters(trees, max(args.turns, 3), 8)
        result["adapter_back_over_first_ttft"] = result["adapters"]["new"]["back_over_first_ttft"]

    if args.install:
        result["install"] = {"new": install(REPO, readme_install((REPO / "README.md").read_text(encoding="utf-8")))}
        if args.install_old:
            old_readme = (trees["old"] / "README.md").read_text(encoding="utf-8")
            result["install"]["old"] = install(trees["old"], readme_install(old_readme))
        result["install_s"] = result["install"]["new"]["install_s"]
    result["machine"]["load_end"] = load()
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
