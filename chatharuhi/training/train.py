"""LoRA fine-tuning on ``build-dataset`` output with PEFT and the plain transformers ``Trainer``.

Loss is on the target only: each sample is the chat template rendered for the prompt (generation
prompt included) and for prompt + target; the two are tokenized separately and concatenated, so the
prompt tokens are exactly what the model receives at inference (``TransformersBackend.encode``) and
their labels are -100. Samples longer than ``max_length`` are skipped and counted (cutting them
would either drop the system prompt or the target).

Defaults, chosen for a 7B base on one 24–80 GB GPU (all overridable):

    LoRA      rank 16, alpha 32, dropout 0.05, on q/k/v/o and gate/up/down projections
    optimiser AdamW, lr 2e-4, cosine schedule, 3 % warmup, 2 epochs
    batch     1 sample × 16 gradient-accumulation steps (an effective batch of 16)
    memory    bf16 where CUDA supports it (else fp16 on CUDA, fp32 on CPU/MPS), gradient checkpointing
    length    2048 tokens (prompt + target)

The output folder is a PEFT adapter folder that ``TransformersBackend(adapters={name: folder})``
loads; ``checkpoint-*`` folders beside it let ``resume=True`` continue an interrupted run (with the
checkpoint's own LoRA rank, alpha and targets, whatever is passed), and
``loss.jsonl`` holds every logged loss (one JSON object a line; the Trainer prints them too).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import BackendUnavailable, InputError
from .dataset import read_samples, split_paths
from .early_stopping import check_validation, make_callback

INSTALL_HINT = "pip install 'chatharuhi[local]' torch"
IGNORE_INDEX = -100  # the label that transformers' cross-entropy skips
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LOSS_LOG = "loss.jsonl"


@dataclass
class TrainConfig:
    """Every training knob, with the defaults documented above."""

    epochs: float = 2.0
    lr: float = 2e-4
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = TARGET_MODULES
    batch_size: int = 1
    grad_accum: int = 16
    max_length: int = 2048
    warmup: float = 0.03
    scheduler: str = "cosine"
    gradient_checkpointing: bool = True
    logging_steps: int = 1
    save_steps: int = 50
    eval_steps: int = 0  # > 0: validation loss every N steps (a curve); 0: once per epoch
    max_val_samples: int = 0  # > 0: evaluate on the first N validation samples only (a bounded CPU run)
    save_total_limit: int = 2
    max_steps: int = -1  # > 0 overrides epochs (smoke runs, tests)
    early_stopping: int = 0  # > 0: stop after this many evaluations without a lower validation loss (epochs: the most)
    min_epochs: float = 1.0  # early stopping never stops before this many epochs of the training split
    min_delta: float = 0.0  # a validation loss must fall by more than this to count as better
    seed: int = 0
    device: str | None = None  # None: CUDA when available, else CPU
    extra: dict[str, Any] = field(default_factory=dict)  # passed through to TrainingArguments


def _imports():
    try:
        import peft
        import torch
        import transformers
    except ImportError as exc:
        raise BackendUnavailable(f"fine-tuning needs torch, transformers and peft: {INSTALL_HINT} ({exc})") from None
    return torch, transformers, peft


def _template(tokenizer: Any, messages: Sequence[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)


def encode_sample(tokenizer: Any, messages: Sequence[dict]) -> dict[str, list[int]]:
    """``input_ids`` and ``labels`` for one sample: the labels of every prompt token are -100."""
    prompt = _template(tokenizer, messages[:-1], True)
    full = _template(tokenizer, messages, False)
    cut = len(prompt)
    if not full.startswith(prompt):  # a template that renders the generation prompt differently
        cut = next((i for i, (a, b) in enumerate(zip(prompt, full)) if a != b), min(len(prompt), len(full)))
    prompt_ids = tokenizer.encode(full[:cut], add_special_tokens=False)
    target_ids = tokenizer.encode(full[cut:], add_special_tokens=False)
    return {"input_ids": prompt_ids + target_ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + target_ids}


def load_data(data: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """(train samples, validation samples) from a file, or from the stem ``build-dataset --out`` was given."""
    path = Path(data)
    pair = split_paths(path)
    if not path.is_file() and pair["train"].is_file():
        return read_samples(pair["train"]), read_samples(pair["val"]) if pair["val"].is_file() else []
    samples = read_samples(path)
    val_file = Path(str(path).replace(".train.jsonl", ".val.jsonl"))
    if val_file != path and val_file.is_file():
        return samples, read_samples(val_file)
    train = [s for s in samples if s.get("meta", {}).get("split", "train") != "val"]
    return train, [s for s in samples if s.get("meta", {}).get("split") == "val"]


def _encode_all(tokenizer: Any, samples: list[dict], max_length: int) -> tuple[list[dict], int]:
    encoded, skipped = [], 0
    for s in samples:
        e = encode_sample(tokenizer, s["messages"])
        if len(e["input_ids"]) > max_length:
            skipped += 1
            continue
        encoded.append({**e, "attention_mask": [1] * len(e["input_ids"])})
    return encoded, skipped


def _checkpointing(transformers: Any, on: bool) -> dict[str, Any]:
    """Gradient checkpointing under the name this transformers uses (v5 renamed it activation_checkpointing)."""
    import inspect

    names = inspect.signature(transformers.TrainingArguments).parameters
    name = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {name: on, f"{name}_kwargs": {"use_reentrant": False} if on else None}


def _last_checkpoint(out: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(out)) if out.is_dir() else None


def train(base: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, config: TrainConfig | None = None,
          resume: bool = False) -> dict:
    """Fine-tune a LoRA adapter for ``base`` on ``data`` into ``out``; returns the final metrics."""
    torch, transformers, peft = _imports()
    config = config or TrainConfig()
    out = Path(out)
    train_samples, val_samples = load_data(data)
    if not train_samples:
        raise InputError(f"{data}: no training samples (every sample is in the validation split?)")
    checkpoint = _last_checkpoint(out) if resume else None
    if resume and checkpoint is None:
        raise InputError(f"--resume: no checkpoint-* folder in {out}; start without --resume")
    if not resume and out.is_dir() and _last_checkpoint(out):
        raise InputError(f"{out} already holds checkpoints: pass --resume to continue, or choose another --out")

    cuda = torch.cuda.is_available() and config.device != "cpu"
    bf16 = cuda and torch.cuda.is_bf16_supported()
    dtype = torch.bfloat16 if bf16 else torch.float16 if cuda else torch.float32
    from ..backends.transformers.backend import locate_base

    source, gguf_file = locate_base(base)
    load = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = transformers.AutoTokenizer.from_pretrained(source, **load)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(tokenizer, "chat_template", None) is None:
        raise InputError(f"{base}: the tokenizer has no chat_template; fine-tune an instruct/chat model")
    train_set, skipped = _encode_all(tokenizer, train_samples, config.max_length)
    val_set, val_skipped = _encode_all(tokenizer, val_samples, config.max_length)
    if config.max_val_samples > 0:
        val_set = val_set[: config.max_val_samples]
    if not train_set:
        raise InputError(f"every training sample is longer than --max-length {config.max_length}; raise it")
    if config.early_stopping > 0:
        check_validation(val_samples, len(val_set), val_skipped, config.max_length,
                         capped=config.max_val_samples if len(val_set) == config.max_val_samples else 0)
    print(f"train: {len(train_set)} samples ({skipped} longer than {config.max_length} skipped); "
          f"validation: {len(val_set)} ({val_skipped} skipped); dtype {str(dtype).replace('torch.', '')}", flush=True)

    model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **load)
    if gguf_file:  # transformers de-quantized every tensor to ``dtype``; only the GGUF label stays, and blocks training
        model.hf_quantizer, model.is_quantized = None, False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [m for m in config.target_modules if m in present]
    if not targets:
        raise InputError(f"none of the LoRA target modules {list(config.target_modules)} exist in {base}")
    lora = peft.LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                           target_modules=targets, task_type="CAUSAL_LM")
    if checkpoint:  # the checkpoint's own shape wins: a different --rank would not load into it
        saved = json.loads((Path(checkpoint) / "adapter_config.json").read_text(encoding="utf-8"))
        lora = peft.LoraConfig(r=saved["r"], lora_alpha=saved["lora_alpha"], lora_dropout=saved["lora_dropout"],
                               target_modules=sorted(saved["target_modules"]), task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, lora)

    every = "steps" if config.eval_steps > 0 else "epoch"
    saving: dict[str, Any] = {"save_strategy": "steps", "save_steps": config.save_steps}
    if config.early_stopping > 0:  # every evaluation is a checkpoint, so the best one can be kept
        saving = {"save_strategy": every, **({"save_steps": config.eval_steps} if every == "steps" else {}),
                  "load_best_model_at_end": True, "metric_for_best_model": "eval_loss", "greater_is_better": False}
    args = transformers.TrainingArguments(
        output_dir=str(out), num_train_epochs=config.epochs, max_steps=config.max_steps,
        learning_rate=config.lr, lr_scheduler_type=config.scheduler, warmup_steps=config.warmup,
        per_device_train_batch_size=config.batch_size, per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, bf16=bf16, fp16=cuda and not bf16,
        **_checkpointing(transformers, config.gradient_checkpointing),
        logging_steps=config.logging_steps, **saving, save_total_limit=config.save_total_limit,
        eval_strategy=every if val_set else "no",
        **({"eval_steps": config.eval_steps} if val_set and config.eval_steps > 0 else {}),
        report_to="none", remove_unused_columns=False, seed=config.seed, use_cpu=not cuda,
        **config.extra)
    collator = transformers.DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX, padding=True)
    callbacks = [_make_loss_log()(out / LOSS_LOG)]
    stopper = None
    if config.early_stopping > 0:
        stopper = make_callback(config.early_stopping, config.min_epochs, config.min_delta)
        callbacks.append(stopper)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=val_set or None,
                                   data_collator=collator, processing_class=tokenizer, callbacks=callbacks)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    metrics = dict(result.metrics)
    if stopper is not None:
        metrics["best_eval_loss"] = trainer.state.best_metric
        metrics["best_checkpoint"] = trainer.state.best_model_checkpoint
        metrics["stopped_early"] = stopper.stopped_at
    if val_set:
        metrics.update(trainer.evaluate())
    (out / "training_config.json").write_text(json.dumps(
        {"base": str(base), "data": str(data), **asdict(config), "metrics": metrics}, indent=2, default=str))
    return metrics


def _make_loss_log():
    from transformers import TrainerCallback

    class LossLog(TrainerCallback):
        """Appends every log entry (step, loss, learning rate, eval loss) to ``loss.jsonl``."""

        def __init__(self, path: Path):
            self.path = path

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            entry = {"step": state.global_step, "epoch": state.epoch, **logs}
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

    return LossLog
