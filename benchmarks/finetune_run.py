"""A character LoRA trained to convergence on CPU, its loss curves, its gain table, and one served conversation.

For each character in ``RUNS`` (the built-in ``sherlock`` and the ``Sheldon`` fixture):

1. ``build_dataset`` (``chatharuhi build-dataset``) with the embedded model's token counter and the budget below;
   its validation scenes are split again, by scene: ``STOP_SHARE`` of them for early stopping, the rest held out
   as the gain table's test cases (no training sample, no early-stopping decision and no prompt ever saw them).
   Sheldon's training split is cut to ``train_limit`` samples (a seeded draw): a full epoch of its 983 would take
   about two hours on this shared 2-core machine, and convergence needs several.
2. ``train`` (``chatharuhi train``) on the embedded SmolLM2-135M-Instruct weights (the pinned GGUF, de-quantized
   by transformers) with early stopping: validation loss every half epoch, stop after ``PATIENCE`` evaluations
   without a lower one (never before one full epoch), the best checkpoint kept; checkpointed, so a rerun resumes.
3. The adapter as a llama.cpp LoRA GGUF (``training/gguf_export.py``), and ``benchmarks/finetune_gain.py`` on
   every test case: base, base + retrieval, LoRA, LoRA + retrieval, with paired intervals; the judges tell
   sherlock, Sheldon and Fagin (built from Oliver Twist, as in ``fidelity_table.py``) apart.
4. One conversation with the trained sherlock through the normal local path: a copy of the character folder
   whose ``character.toml`` names the adapter (``[adapter] base = "embedded", gguf = ...``), ``llm="embedded"``.

    PYTHONPATH=. nice -n 10 python benchmarks/finetune_run.py --work /tmp/ft --docs docs/finetune

Writes ``loss_curves.json``, ``loss_curves.png``, ``gain.json`` and ``conversation.md`` into ``--docs``; the last
line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from chatharuhi.config import builtin_characters_dir  # noqa: E402
from chatharuhi.training.dataset import read_samples, split_paths  # noqa: E402
from chatharuhi.training.train import TrainConfig  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures" / "chatharuhi"
RUNS = {"sherlock": {"ref": "sherlock", "val_fraction": 0.5, "train_limit": None},
        "Sheldon": {"ref": str(FIXTURES / "Sheldon"), "val_fraction": 0.1, "train_limit": 240}}
STOP_SHARE = 0.3  # of each character's validation scenes: early stopping; the rest: the gain table's test cases
BUDGET = {"context_window": 640, "reply_reserve": 128, "story_tokens": 256, "history_tokens": 160}
BATCH = 4  # 4 samples a step: about 3x faster per sample than 1 on two CPU cores
PATIENCE = 3  # evaluations (half epochs) without a lower validation loss
MAX_EPOCHS = 12
LR = 5e-4
SEED = 0
CONVERSATION = ["Holmes, a man left this pipe on our doorstep this morning. What can you tell me about him?",
                "How can you be so sure he is left-handed?",
                "Then what do we do next?"]


def prepare_data(name: str, spec: dict, work: Path) -> dict:
    """Build the dataset once and write train / early-stopping / test files; returns their counts."""
    data = work / "data"
    train_file, stop_file = data / f"{name}.train.jsonl", data / f"{name}.val.jsonl"
    test_file = data / f"{name}-test.val.jsonl"
    if not test_file.is_file():
        from chatharuhi.backends.registry import get_backend
        from chatharuhi.training import build_dataset

        data.mkdir(parents=True, exist_ok=True)
        full = data / f"{name}-full.jsonl"
        counter = get_backend("transformers", model="embedded")
        build_dataset([spec["ref"]], full, backend=counter, val_fraction=spec["val_fraction"], seed=SEED,
                      log=lambda m: print(m, file=sys.stderr), **BUDGET)
        paths = split_paths(full)
        train, val = read_samples(paths["train"]), read_samples(paths["val"])
        scenes = sorted({s["meta"]["scene"] for s in val})
        random.Random(f"finetune-run:{SEED}:{name}").shuffle(scenes)
        stop_scenes = set(scenes[: max(1, round(STOP_SHARE * len(scenes)))])
        if spec["train_limit"] and len(train) > spec["train_limit"]:
            train = random.Random(f"finetune-run-train:{SEED}:{name}").sample(train, spec["train_limit"])
        _write(train_file, train)
        _write(stop_file, [s for s in val if s["meta"]["scene"] in stop_scenes])
        _write(test_file, [s for s in val if s["meta"]["scene"] not in stop_scenes])
    counts = {k: len(read_samples(p)) for k, p in (("train", train_file), ("early_stopping", stop_file),
                                                     ("test", test_file))}
    counts["test_scenes"] = len({s["meta"]["scene"] for s in read_samples(test_file)})
    return counts


def _write(path: Path, samples: list[dict]) -> None:
    path.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples), encoding="utf-8")


def train_one(name: str, work: Path, counts: dict) -> dict:
    """Train (or resume, or skip when done) one adapter; returns its training_config.json."""
    from chatharuhi.training.train import train

    out = work / "adapters" / name
    done = out / "training_config.json"
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    steps_per_epoch = -(-counts["train"] // BATCH)
    config = TrainConfig(epochs=MAX_EPOCHS, lr=LR, batch_size=BATCH, grad_accum=1, max_length=BUDGET["context_window"],
                         eval_steps=max(1, steps_per_epoch // 2), early_stopping=PATIENCE, min_epochs=1.0,
                         gradient_checkpointing=False, device="cpu", seed=SEED, save_total_limit=2)
    resume = out.is_dir() and any(out.glob("checkpoint-*"))
    if not resume:  # the loss before training, once: a resumed run would count a repeat as "no gain"
        config.extra = {"eval_on_start": True}
    timing = work / f"{name}.train-seconds.json"
    spent = json.loads(timing.read_text())["seconds"] if timing.is_file() else 0.0
    t0 = time.perf_counter()
    try:
        train("embedded", work / "data" / f"{name}.jsonl", out, config, resume=resume)
    finally:
        timing.write_text(json.dumps({"seconds": round(spent + time.perf_counter() - t0, 1)}))
    return json.loads(done.read_text(encoding="utf-8"))


def curves(work: Path) -> dict:
    """Per character: train loss and validation loss by step and epoch, from loss.jsonl."""
    out = {}
    for name in RUNS:
        log = [json.loads(x) for x in (work / "adapters" / name / "loss.jsonl").read_text().splitlines() if x.strip()]
        seen, rows, final = set(), [], None
        for e in log:  # a resumed run logs some steps twice: the later entry wins
            if "train_runtime" in e:
                final = True  # what follows is the evaluation of the best checkpoint, reloaded
                continue
            if final and "eval_loss" in e:
                final = e["eval_loss"]
                continue
            final = None if final is True else final
            key = (e["step"], "eval_loss" in e, "loss" in e)
            if key in seen:
                rows = [r for r in rows if (r["step"], "eval_loss" in r, "loss" in r) != key]
            seen.add(key)
            rows.append(e)
        out[name] = {"train_loss": [[e["step"], round(e["epoch"], 3), round(e["loss"], 4)] for e in rows if "loss" in e],
                     "val_loss": [[e["step"], round(e["epoch"], 3), round(e["eval_loss"], 4)]
                                  for e in rows if "eval_loss" in e],
                     "best_reloaded_val_loss": None if final in (None, True) else round(final, 4)}
    return out


def plot(loss: dict, path: Path) -> None:
    """Train (smoothed) and validation loss per epoch, one panel per character."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(loss), figsize=(5.5 * len(loss), 3.6), squeeze=False)
    for ax, (name, c) in zip(axes[0], loss.items()):
        ep = [x[1] for x in c["train_loss"]]
        tl = [x[2] for x in c["train_loss"]]
        k = 5
        smooth = [sum(tl[max(0, i - k + 1): i + 1]) / len(tl[max(0, i - k + 1): i + 1]) for i in range(len(tl))]
        ax.plot(ep, tl, color="0.8", lw=0.8, label="train loss (per step)")
        ax.plot(ep, smooth, color="C0", label=f"train loss ({k}-step mean)")
        ax.plot([x[1] for x in c["val_loss"]], [x[2] for x in c["val_loss"]], "o-", color="C3",
                label="validation loss")
        best = min(c["val_loss"], key=lambda x: x[2])
        ax.axvline(best[1], color="C3", ls=":", lw=1)
        ax.set_title(f"{name}: best validation loss {best[2]:.3f} at epoch {best[1]:.1f}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats per target token")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def serve(work: Path, docs: Path) -> str:
    """One conversation with the trained sherlock, loaded the normal way: its folder names the adapter."""
    from chatharuhi.chat.chatbot import Chatbot
    from chatharuhi.training.gguf_export import export_gguf

    adapter = work / "adapters" / "sherlock"
    gguf = adapter / "adapter.gguf"
    if not gguf.is_file():
        export_gguf(adapter, gguf, "embedded")
    folder = work / "characters" / "sherlock-lora"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(builtin_characters_dir() / "sherlock", folder)
    toml = folder / "character.toml"
    text = toml.read_text(encoding="utf-8").replace('name = "sherlock"', 'name = "sherlock-lora"')
    toml.write_text(text + f'\n[adapter]\nbase = "embedded"\ngguf = "{gguf}"\n', encoding="utf-8")
    bot = Chatbot("sherlock-lora", characters_dir=folder.parent, llm="embedded")
    lines = ["The trained sherlock adapter, served through the normal local path: a character folder whose "
             "`character.toml` ends with", "", "    [adapter]", '    base = "embedded"', '    gguf = ".../adapter.gguf"',
             "", '`Chatbot("sherlock-lora", characters_dir=..., llm="embedded")`, default sampling:', ""]
    for message in CONVERSATION:
        reply = bot.chat(message, "Watson")
        lines += [f"> **Watson:** {message}", ">", f"> **Holmes:** {reply}", ">"]
    bot.backend.close()
    text = "\n".join(lines[:-1]) + "\n"
    (docs / "conversation.md").write_text(text, encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> int:
    """Data, training, curves, gain table, conversation."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, required=True, help="data, adapters and checkpoints (a rerun resumes)")
    p.add_argument("--docs", type=Path, required=True, help="where the curves, the gain table and the conversation go")
    p.add_argument("--skip-gain", action="store_true", help="train and plot only")
    args = p.parse_args(argv)
    start = time.perf_counter()
    args.docs.mkdir(parents=True, exist_ok=True)
    report: dict = {"budget": BUDGET, "batch": BATCH, "patience": PATIENCE, "max_epochs": MAX_EPOCHS, "lr": LR,
                    "stop_share": STOP_SHARE, "runs": {}}
    for name, spec in RUNS.items():
        counts = prepare_data(name, spec, args.work)
        print(f"{name}: {counts}", file=sys.stderr)
        trained = train_one(name, args.work, counts)
        seconds = json.loads((args.work / f"{name}.train-seconds.json").read_text())["seconds"]
        metrics = {**trained["metrics"]}
        if metrics.get("best_checkpoint"):  # the folder's name: the work dir is this machine's
            metrics["best_checkpoint"] = Path(metrics["best_checkpoint"]).name
        ref = spec["ref"] if spec["ref"] in RUNS else os.path.relpath(spec["ref"], ROOT)
        report["runs"][name] = {**spec, "ref": ref, "counts": counts, "train_seconds": seconds, "metrics": metrics}
    loss = curves(args.work)
    (args.docs / "loss_curves.json").write_text(json.dumps({"base": "embedded SmolLM2-135M-Instruct (Q4_1 GGUF "
                                                            "de-quantized to float32 by transformers)", **report,
                                                            "curves": loss}, indent=1), encoding="utf-8")
    plot(loss, args.docs / "loss_curves.png")
    if not args.skip_gain:
        import finetune_gain
        from fidelity_table import build_novel_character

        runs = []
        for name, spec in RUNS.items():
            runs += ["--run", f"{spec['ref']},{args.work / 'data' / f'{name}-test.jsonl'},{args.work / 'adapters' / name}"]
        judges = [x for ref in (*(spec["ref"] for spec in RUNS.values()), build_novel_character(args.work))
                  for x in ("--judge", str(ref))]  # the generation table's three English characters
        finetune_gain.main([*runs, *judges, "--cases", "0", "--out", str(args.docs / "gain.json")])
        print(serve(args.work, args.docs))
    report["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps({k: {"counts": v["counts"], "train_seconds": v["train_seconds"],
                          "best": v["metrics"].get("best_eval_loss")} for k, v in report["runs"].items()}
                     | {"wall_s": report["wall_s"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
