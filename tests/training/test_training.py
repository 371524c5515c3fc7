"""Training data from the haruhi fixture, and LoRA fine-tuning of a tiny random Llama on it (CPU, no downloads)."""

from __future__ import annotations

import json

import pytest

from chatharuhi.character.folder import load_character
from chatharuhi.cli import main
from chatharuhi.errors import InputError
from chatharuhi.training import build_samples, read_samples
from chatharuhi.training.dataset import length_stats, split_scenes

SMALL = {"top_k": 2, "story_tokens": 120, "history_tokens": 60}  # short prompts for the tiny model


def _build(fixtures_dir, out, *extra):
    assert main(["build-dataset", str(fixtures_dir / "haruhi"), "--embedder", "hash", "--out", str(out), *extra]) == 0


def test_build_dataset_counts_split_and_determinism(fixtures_dir, tmp_path, capsys):
    _build(fixtures_dir, tmp_path / "data.jsonl")
    report = capsys.readouterr().out
    assert "haruhi" in report and "263" in report and "prompt" in report and "p95" in report
    train = read_samples(tmp_path / "data.train.jsonl")
    val = read_samples(tmp_path / "data.val.jsonl")
    assert (len(train), len(val)) == (263, 20)  # every (q, a) pair of the eval builder: 283
    train_scenes = {s["meta"]["scene"] for s in train}
    val_scenes = {s["meta"]["scene"] for s in val}
    assert (len(train_scenes), len(val_scenes)) == (131, 7) and not train_scenes & val_scenes  # split by scene
    assert {s["meta"]["split"] for s in train} == {"train"} and {s["meta"]["split"] for s in val} == {"val"}

    haruhi = load_character(fixtures_dir / "haruhi")
    scenes = {s.id: s for s in haruhi.scenes}
    for sample in train + val:
        messages = sample["messages"]
        assert [m["role"] for m in messages[:1] + messages[-2:]] == ["system", "user", "assistant"]
        assert messages[-1]["content"].startswith("春日:「") and messages[-1]["content"].endswith("」")
        system = messages[0]["content"]
        assert scenes[sample["meta"]["scene"]].text not in system  # never its own scene
        assert not any(scenes[v].text in system for v in val_scenes)  # validation scenes appear nowhere

    first = (tmp_path / "data.train.jsonl").read_bytes()
    _build(fixtures_dir, tmp_path / "data.jsonl")
    assert (tmp_path / "data.train.jsonl").read_bytes() == first  # same seed: identical file
    _build(fixtures_dir, tmp_path / "other.jsonl", "--seed", "1")
    assert (tmp_path / "other.val.jsonl").read_bytes() != (tmp_path / "data.val.jsonl").read_bytes()
    _build(fixtures_dir, tmp_path / "all.jsonl", "--val-fraction", "0")
    assert len(read_samples(tmp_path / "all.train.jsonl")) == 283 and not (tmp_path / "all.val.jsonl").exists()


def test_the_exclusion_matters(fixtures_dir):
    """Without excluding it, the cue's own scene is what retrieval finds: the leak the exclusion prevents."""
    from chatharuhi import ChatHaruhi
    from chatharuhi.backends.scripted import ScriptedBackend
    from chatharuhi.evaluation.cases import every_case

    haruhi = load_character(fixtures_dir / "haruhi")
    scenes = {s.id: s for s in haruhi.scenes}
    bot = ChatHaruhi(character=haruhi, llm=ScriptedBackend(), embedder="hash")
    cases = every_case(haruhi)[:20]
    leaked = sum(scenes[c.scene_id].text in bot.prepare(c.query, c.query_role, history=list(c.history)).messages[0]
                 .content for c in cases)
    assert leaked >= 10


def test_split_and_stats_helpers():
    ids = [f"s{i}" for i in range(40)]
    val = split_scenes(ids, 0.1, 0, "x")
    assert len(val) == 4 and val == split_scenes(reversed(ids), 0.1, 0, "x")  # order-independent
    assert split_scenes(["only"], 0.5, 0, "x") == set()
    with pytest.raises(InputError, match="val-fraction"):
        split_scenes(ids, 1.0, 0, "x")
    assert length_stats([5, 1, 3, 100]) == {"min": 1, "median": 4, "p95": 100, "max": 100}


def test_too_little_data_for_a_validation_split(tmp_path, capsys):
    folder = tmp_path / "lonely"
    (folder / "texts").mkdir(parents=True)
    (folder / "system_prompt.txt").write_text("You are Lonely.", encoding="utf-8")
    (folder / "texts" / "01.txt").write_text(
        "Bob:「Where have you been all this long winter?」\nLonely:「Walking the empty roads of the north, alone.」\n"
        "Bob:「Will you stay with us for the spring festival?」\nLonely:「Only if the old mill still grinds flour.」\n",
        encoding="utf-8")
    assert main(["build-dataset", str(folder), "--embedder", "hash", "--out", str(tmp_path / "d.jsonl")]) != 0
    assert "too little data for a validation split: 1 scene(s) with 2 sample(s)" in capsys.readouterr().err
    assert main(["build-dataset", str(folder), "--embedder", "hash", "--out", str(tmp_path / "d.jsonl"),
                 "--val-fraction", "0"]) == 0


def test_bad_data_file(tmp_path):
    with pytest.raises(InputError, match="build-dataset"):
        read_samples(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl:1: .*assistant"):
        read_samples(bad)


# -- fine-tuning -------------------------------------------------------------------------------------

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from chatharuhi.training.train import IGNORE_INDEX, TrainConfig, encode_sample, train  # noqa: E402
from helpers.tiny_llama import _model, _tokenizer  # noqa: E402  the tiny random Llama builder

FAST = dict(batch_size=1, grad_accum=1, lr=1e-2, rank=8, alpha=16, dropout=0.0, max_length=4096, logging_steps=1,
            gradient_checkpointing=False, warmup=0.0, scheduler="constant", device="cpu")


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """A saved tiny base model and a handful of samples built from the built-in haruhi with short prompts."""
    from chatharuhi.config import builtin_characters_dir

    root = tmp_path_factory.mktemp("train")
    tokenizer = _tokenizer()
    _model(tokenizer, hidden=64).save_pretrained(root / "base")  # 32 wide learns too little to measure
    tokenizer.save_pretrained(root / "base")
    samples = build_samples(builtin_characters_dir() / "haruhi", embedder="hash", val_fraction=0.0, **SMALL)[:4]
    data = root / "data.train.jsonl"
    data.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples), encoding="utf-8")
    return root, samples


def test_labels_mask_the_prompt():
    tokenizer = _tokenizer()
    messages = [{"role": "system", "content": "You are Holmes."}, {"role": "user", "content": "Watson:「Where?」"},
                {"role": "assistant", "content": "Holmes:「The club.」"}]
    e = encode_sample(tokenizer, messages)
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    n = len(tokenizer.encode(prompt, add_special_tokens=False))
    assert e["labels"][:n] == [IGNORE_INDEX] * n  # the prompt, exactly as the backend encodes it
    assert e["input_ids"][:n] == tokenizer.encode(prompt, add_special_tokens=False)
    assert e["labels"][n:] == e["input_ids"][n:] and len(e["labels"]) == len(e["input_ids"])
    assert tokenizer.decode(e["input_ids"][n:]) == "Holmes:「The club.」<|im_end|>\n"  # the target and its end


def _loss(model, tokenizer, samples) -> float:
    total = 0.0
    with torch.no_grad():
        for s in samples:
            e = encode_sample(tokenizer, s["messages"])
            out = model(input_ids=torch.tensor([e["input_ids"]]), labels=torch.tensor([e["labels"]]))
            total += out.loss.item()
    return total / len(samples)


def test_training_lowers_the_loss_and_the_adapter_loads_in_the_backend(tiny_setup, tmp_path):
    from chatharuhi.backends.transformers.backend import TransformersBackend
    from chatharuhi.types import Message

    root, samples = tiny_setup
    out = tmp_path / "adapter"
    train(root / "base", root / "data.train.jsonl", out, TrainConfig(max_steps=24, save_steps=100, **FAST))
    log = [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    assert len(losses) >= 10

    backend = TransformersBackend(root / "base", adapters={"haruhi": out}, device="cpu", temperature=0)
    tokenizer = backend.tokenizer
    with backend.model.disable_adapter():
        before = _loss(backend.model, tokenizer, samples)
    backend.model.set_adapter("haruhi")
    after = _loss(backend.model, tokenizer, samples)
    assert after < before - 0.3, (before, after)  # the same samples, before and after training

    messages = [Message(m["role"], m["content"]) for m in samples[0]["messages"][:-1]]
    ids = torch.tensor([backend.encode(messages)])
    with torch.inference_mode():
        with backend._adapter_scope(None):
            bare = backend.model(input_ids=ids).logits[0, -1]
        with backend._adapter_scope("haruhi"):
            tuned = backend.model(input_ids=ids).logits[0, -1]
    assert not torch.allclose(bare, tuned)
    assert isinstance(backend.complete(messages, max_tokens=4, adapter="haruhi"), str)


def test_resume_continues_from_the_last_checkpoint(tiny_setup, tmp_path):
    root, _ = tiny_setup
    out = tmp_path / "adapter"
    with pytest.raises(InputError, match="no checkpoint"):
        train(root / "base", root / "data.train.jsonl", out, TrainConfig(max_steps=2, **FAST), resume=True)
    train(root / "base", root / "data.train.jsonl", out, TrainConfig(max_steps=4, save_steps=2, **FAST))
    assert (out / "checkpoint-4").is_dir()
    with pytest.raises(InputError, match="--resume"):
        train(root / "base", root / "data.train.jsonl", out, TrainConfig(max_steps=6, save_steps=2, **FAST))
    assert main(["train", "--base", str(root / "base"), "--data", str(root / "data.jsonl"), "--out", str(out),
                 "--max-steps", "6", "--save-steps", "2", "--grad-accum", "1", "--lr", "1e-2", "--rank", "4",
                 "--alpha", "8", "--max-length", "4096", "--no-gradient-checkpointing", "--device", "cpu",
                 "--resume"]) == 0
    steps = [json.loads(line)["step"] for line in (out / "loss.jsonl").read_text().splitlines()]
    assert (out / "checkpoint-6").is_dir() and max(steps) == 6
    assert [s for s in steps if s > 4] and 5 in steps  # steps 5 and 6 came from the resumed run


def _with_validation(root, samples, n_val):
    """data.train.jsonl (the samples) and data.val.jsonl (``n_val`` of them again, marked val) under ``root``."""
    stem = root / f"val{n_val}"
    stem.mkdir()
    (stem / "data.train.jsonl").write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples),
                                           encoding="utf-8")
    val = [{**s, "meta": {**s["meta"], "split": "val"}} for s in (samples * 4)[:n_val]]
    (stem / "data.val.jsonl").write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in val),
                                         encoding="utf-8")
    return stem / "data.jsonl"


def test_early_stopping_refuses_a_validation_split_too_small(tiny_setup, tmp_path, capsys):
    root, samples = tiny_setup
    data = _with_validation(tmp_path, samples, 3)
    with pytest.raises(InputError, match=r"at least 8 validation samples .* there are 3 \(3 validation sample\(s\) "
                                         r"from \d scene\(s\)\).*--val-fraction"):
        train(root / "base", data, tmp_path / "adapter", TrainConfig(epochs=2, early_stopping=1, **FAST))
    assert not (tmp_path / "adapter").exists()  # refused before the model was loaded
    assert main(["train", "--base", str(root / "base"), "--data", str(data), "--out", str(tmp_path / "cli"),
                 "--early-stopping", "2", "--device", "cpu"]) == 2  # the command line: the same counts, exit 2
    assert "there are 3 (3 validation sample(s)" in capsys.readouterr().err and not (tmp_path / "cli").exists()
    data = _with_validation(tmp_path, samples, 10)
    with pytest.raises(InputError, match=r"there are 4 .*--max-val-samples 4 keeps 4"):
        train(root / "base", data, tmp_path / "adapter", TrainConfig(epochs=2, early_stopping=1, max_val_samples=4,
                                                                     **FAST))


def test_early_stopping_stops_after_the_patience_and_keeps_the_best(tiny_setup, tmp_path):
    root, samples = tiny_setup
    data = _with_validation(tmp_path, samples, 8)
    out = tmp_path / "adapter"
    # min_delta so large that no evaluation after the first counts as better: the second one stops the run
    metrics = train(root / "base", data, out, TrainConfig(epochs=6, early_stopping=1, min_epochs=1.0,
                                                          min_delta=1e9, **FAST))
    log = [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]
    evals = [e for e in log if "eval_loss" in e]
    assert [round(e["epoch"]) for e in evals[:2]] == [1, 2] and max(e["epoch"] for e in log) < 6
    assert metrics["stopped_early"]["epoch"] == pytest.approx(2.0)
    best = min(evals[:2], key=lambda e: e["eval_loss"])  # min_delta decides when to stop, not which one is kept
    assert metrics["best_checkpoint"].endswith(f"checkpoint-{best['step']}")
    assert metrics["best_eval_loss"] == pytest.approx(best["eval_loss"])
    from safetensors.torch import load_file

    kept, chosen = load_file(out / "adapter_model.safetensors"), load_file(f"{metrics['best_checkpoint']}/"
                                                                           "adapter_model.safetensors")
    assert kept.keys() == chosen.keys() and all(torch.equal(kept[k], chosen[k]) for k in kept)  # the best is kept


def test_early_stopping_waits_for_min_epochs_and_counts_from_the_log_history():
    from types import SimpleNamespace

    from chatharuhi.training.early_stopping import best_so_far, make_callback

    history = [{"loss": 3.0}, {"eval_loss": 2.0}, {"eval_loss": 1.5}, {"eval_loss": 1.6}, {"eval_loss": 1.55}]
    assert best_so_far(history, 0.0) == (1.5, 2)
    assert best_so_far(history, 0.6) == (2.0, 3)  # 1.5 is not 0.6 better than 2.0
    stopper = make_callback(patience=2, min_epochs=3.0)
    for epoch, should_stop in ((2.0, False), (3.0, True)):  # two evaluations without gain, but only at epoch 3
        control = SimpleNamespace(should_training_stop=False)
        stopper.on_evaluate(None, SimpleNamespace(log_history=history, epoch=epoch, global_step=9), control)
        assert control.should_training_stop is should_stop
    assert stopper.stopped_at == {"step": 9, "epoch": 3.0, "evaluations_without_gain": 2}


def test_an_interrupted_early_stopping_run_resumes_and_stops_where_it_would_have(tiny_setup, tmp_path, monkeypatch):
    import chatharuhi.training.train as train_module

    root, samples = tiny_setup
    data = _with_validation(tmp_path, samples, 8)
    config = dict(epochs=6, early_stopping=2, min_delta=1e9, **FAST)  # stops at the third evaluation (epoch 3)
    whole = train(root / "base", data, tmp_path / "whole", TrainConfig(**config))
    real = train_module.make_callback

    def interrupted(*args, **kwargs):
        callback = real(*args, **kwargs)

        def on_step_end(args, state, control, **kw):
            if state.global_step == len(samples) + 2:  # mid-way through epoch 2: the last checkpoint is epoch 1's
                raise KeyboardInterrupt
        callback.on_step_end = on_step_end
        return callback

    monkeypatch.setattr(train_module, "make_callback", interrupted)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train(root / "base", data, out, TrainConfig(**config))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [f"checkpoint-{len(samples)}"]
    monkeypatch.setattr(train_module, "make_callback", real)
    resumed = train(root / "base", data, out, TrainConfig(**config), resume=True)
    assert whole["stopped_early"]["step"] == 3 * len(samples)
    assert resumed["stopped_early"] == whole["stopped_early"]  # the epoch-1 evaluation counted after the resume
