"""Run the evaluation: every case under every configuration, checkpointed, then summarised.

Configurations (all use the same packer, budget and backend; only the prompt's content differs):

- ``full``: retrieved scenes + the scene's earlier lines as history (the real pipeline);
- ``none``: no scenes (``top_k=0``), history kept;
- ``random``: as many random scenes as ``full`` retrieves (seeded per case), history kept;
- ``system_only``: the system prompt and the query alone: no scenes, no history.

Every case excludes its source scene, and any other scene holding the answer line verbatim, from
retrieval (checked: a run stops if one ever reaches a prompt) and from the identity and voice judges
that score its reply (fitted per case without those scenes: ``judges.py``). Each finished (case, configuration)
is appended to ``checkpoint.jsonl``; a restarted run skips what is there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..backends.registry import resolve_backend
from ..backends.scripted import ScriptedBackend
from ..character.discovery import resolve_character
from ..character.folder import Character
from ..chat.chatbot import Chatbot
from ..config import DEFAULT_DENSE_WEIGHT, DEFAULT_LEXICAL_WEIGHT, DEFAULT_TOP_K, EVAL_DEFAULT_CASES
from ..errors import InputError
from ..retrieval.embeddings import Embedder, get_embedder
from . import metrics
from .cases import EvalCase, build_cases, require_cases
from .contrast import Contrast, available_contrast, given_contrast, require_distinct, why_empty
from .exclusion import EvalIndex, ExclusionLeak, case_excludes
from .judges import Judges, own_lines
from .scoring import EVAL_MAX_TOKENS, CharacterData, evaluate, judges_for, reference_scores

__all__ = ["CONFIGS", "ExclusionLeak", "EvalIndex", "case_excludes", "own_lines", "run_eval"]

CONFIGS = ("full", "none", "random", "system_only")
DEFAULT_CASES = EVAL_DEFAULT_CASES
MAX_CENTROID_LINES = 300  # lines per character averaged into its identity centroid
CHECKPOINT_FILE = "checkpoint.jsonl"
JUDGES_FIT = "without the case's scenes"  # recorded in run.json: a run scored by judges that saw them is not resumed
RUN_FILE = "run.json"
Key = tuple[str, str, str]  # (character, case id, configuration)
Run = tuple[CharacterData, EvalCase, str]  # one case under one configuration


def _settings_match(saved: dict, current: dict) -> list[str]:
    return [k for k in current if saved.get(k) != current[k]]


def run_eval(
    characters: Sequence[str | os.PathLike | Character],
    out_dir: str | os.PathLike,
    *,
    backend: Backend | str | None = None,
    embedder: Embedder | str | None = None,
    characters_dir: Any = None,
    cases: int | None = None,
    seed: int = 0,
    retrieval_only: bool = False,
    configs: Sequence[str] = CONFIGS,
    compare: Sequence[str | os.PathLike | Character] | None = None,
    top_k: int = DEFAULT_TOP_K,
    dense_weight: float = DEFAULT_DENSE_WEIGHT,
    lexical_weight: float = DEFAULT_LEXICAL_WEIGHT,
    max_tokens: int = EVAL_MAX_TOKENS,
    progress: bool = True,
    plot: bool = True,
    log: Callable[[str], None] = print,
    **llm_options: Any,
) -> dict:
    """Evaluate ``characters``; write ``results.json``, ``summary.json``, ``summary.md`` and ``scores.png``
    under ``out_dir``; return the summary.

    ``cases``: None draws up to ``DEFAULT_CASES`` per character, 0 every usable one, N exactly N (refused, with
    the count, for a character with fewer usable scenes). ``compare``: the contrast set, characters used only
    by the identity and voice judges; None (the default) takes every other available character in the
    evaluated characters' languages (``contrast.py``), ``()`` none."""
    from .report import summarize, write_outputs

    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or not configs:
        raise InputError(f"unknown configuration(s) {unknown}; choose from {', '.join(CONFIGS)}")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    emb = get_embedder(embedder)
    if retrieval_only:
        llm: Backend = ScriptedBackend()  # never called: only its token counter packs the prompts
    else:
        llm = resolve_backend(backend, **llm_options)
    backend_name = backend if isinstance(backend, str) else getattr(llm, "name", type(llm).__name__)

    data, skipped = _prepare(characters, characters_dir, cases, seed, log)
    evaluated = [d.character for d in data]
    if compare is None:
        contrast = available_contrast(evaluated, characters_dir)
    else:
        contrast = given_contrast(compare, evaluated, characters_dir)
    settings = {"characters": [d.character.name for d in data], "backend": None if retrieval_only else backend_name,
                "model": getattr(llm, "model", None) if not retrieval_only else None, "embedder": emb.id,
                "cases": cases, "seed": seed, "retrieval_only": retrieval_only, "configs": list(configs),
                "top_k": top_k, "dense_weight": dense_weight, "lexical_weight": lexical_weight,
                "max_tokens": None if retrieval_only else max_tokens,
                "compare": None if compare is None else
                [c.name if isinstance(c, Character) else os.fspath(c) for c in compare],
                "judges": JUDGES_FIT}
    checkpoint = _claim(out, settings)

    lines = metrics.LineVectors(emb)
    judges = Judges(evaluated + contrast.characters, lambda texts: lines.embed(texts, progress, "judge lines"),
                    MAX_CENTROID_LINES, seed)
    contrast_info = contrast_summary(contrast, data, judges)
    for name, why in contrast_info["why_empty"].items():
        if not retrieval_only:
            log(f"{name}: no identity or voice score: {why}")
    answer_vecs = _vectors(data, lines, progress)

    todo = _todo(data, configs, checkpoint, log)
    bots = _Bots(llm, emb, top_k, dense_weight, lexical_weight, seed)
    _run(todo, checkpoint, progress, lines, lambda d, case, cfg: evaluate(
        d, case, cfg, bots.of(d, cfg), answer_vecs[(d.character.name, case.id)], judges_for(judges, d, case), lines,
        retrieval_only, max_tokens))

    ordered = _records(checkpoint, data, configs)
    summary = summarize(ordered, settings, reference_scores(data, answer_vecs, judges), skipped, contrast_info)
    write_outputs(out, settings, data, ordered, summary, plot_png=plot, log=log)
    return summary


def _prepare(characters: Sequence[str | os.PathLike | Character], characters_dir: Any, cases: int | None,
             seed: int, log: Callable[[str], None]) -> tuple[list[CharacterData], list[str]]:
    """The evaluated characters with their cases, and why each one without enough usable cases was skipped."""
    if cases is not None and cases < 0:
        raise InputError(f"cases={cases}: use a positive number, 0 for every usable case, or None for up to "
                         f"{DEFAULT_CASES}")
    wanted_cases = DEFAULT_CASES if cases is None else (cases or None)
    loaded = [resolve_character(ref, characters_dir) for ref in characters]
    require_distinct(loaded, "the evaluated characters")
    data: list[CharacterData] = []
    skipped: list[str] = []
    short: list[str] = []
    for character in loaded:
        case_set = build_cases(character, wanted_cases, seed)
        try:
            require_cases(case_set, character)
        except InputError as exc:
            skipped.append(str(exc))
            log(f"skipping {exc}")
            continue
        if cases and case_set.usable_scenes < cases:
            short.append(f"{character.name} has {case_set.usable_scenes} usable scene(s) (one case per scene, "
                         f"{case_set.candidates} (question, answer) pairs in {len(character.scenes)} scenes)")
        data.append(CharacterData(character, case_set.cases, case_set.usable_scenes, case_set.candidates))
    if short:
        fewest = min(d.usable_scenes for d in data)
        raise InputError(f"{cases} cases per character were asked for, but " + "; ".join(short)
                         + f". Ask for at most {fewest} (--cases {fewest}), or every usable case (--cases 0)")
    if not data:
        raise InputError("no character has enough usable test cases:\n  " + "\n  ".join(skipped))
    return data, skipped


def _claim(out: Path, settings: dict) -> Path:
    """Write the run's settings to ``run.json``, refusing to resume a checkpoint made with other settings; the
    checkpoint's path."""
    run_file, checkpoint = out / RUN_FILE, out / CHECKPOINT_FILE
    if checkpoint.exists() and run_file.exists():
        saved = json.loads(run_file.read_text(encoding="utf-8"))
        differ = _settings_match(saved, settings)
        if differ:
            raise InputError(f"{out} holds a run with other settings ({', '.join(differ)}): resume it with the "
                             f"same options, choose another --out, or delete {checkpoint}")
    run_file.write_text(json.dumps(settings, ensure_ascii=False, indent=1), encoding="utf-8")
    return checkpoint


def _vectors(data: Sequence[CharacterData], lines: metrics.LineVectors,
             progress: bool) -> dict[tuple[str, str], np.ndarray]:
    """Each character's lines embedded per scene, its key terms and each case's exclusions (kept on ``data``);
    returns each case's answer vector."""
    for d in data:
        pairs = own_lines(d.character)
        vecs = lines.embed([t for _, t in pairs], progress, f"{d.character.name} lines")
        grouped: dict[str, list[np.ndarray]] = {}
        for (scene_id, _), v in zip(pairs, vecs):
            grouped.setdefault(scene_id, []).append(v)
        d.lines_by_scene = {k: np.stack(v) for k, v in grouped.items()}
        d.key_terms = metrics.KeyTerms((s.id, s.text) for s in d.character.scenes)
        d.excludes = {c.id: case_excludes(d.character, c) for c in d.cases}
    answer_vecs = {(d.character.name, c.id): v for d in data
                   for c, v in zip(d.cases, lines.embed([c.answer for c in d.cases]))}
    lines.save()
    return answer_vecs


def _todo(data: Sequence[CharacterData], configs: Sequence[str], checkpoint: Path,
          log: Callable[[str], None]) -> list[Run]:
    """The (character, case, configuration) runs the checkpoint does not hold yet."""
    done: set[Key] = set()
    if checkpoint.exists():
        for rec in _read_jsonl(checkpoint):
            done.add((rec["character"], rec["case_id"], rec["config"]))
    todo = [(d, c, cfg) for d in data for c in d.cases for cfg in configs
            if (d.character.name, c.id, cfg) not in done]
    if done:
        log(f"resuming: {len(done)} finished, {len(todo)} to go")
    return todo


class _Bots:
    """One chatbot per (character, configuration), its index wrapped in an ``EvalIndex``."""

    def __init__(self, llm: Backend, emb: Embedder, top_k: int, dense_weight: float, lexical_weight: float,
                 seed: int):
        self.llm, self.emb, self.top_k, self.seed = llm, emb, top_k, seed
        self.dense_weight, self.lexical_weight = dense_weight, lexical_weight
        self.bots: dict[tuple[str, str], tuple[Chatbot, EvalIndex]] = {}

    def of(self, d: CharacterData, cfg: str) -> tuple[Chatbot, EvalIndex]:
        key = (d.character.name, cfg)
        if key not in self.bots:
            k = 0 if cfg in ("none", "system_only") else self.top_k
            bot = Chatbot(character=d.character, llm=self.llm, embedder=self.emb, top_k=k,
                          dense_weight=self.dense_weight, lexical_weight=self.lexical_weight)
            proxy = EvalIndex(bot.index, "random" if cfg == "random" else "retrieve", self.seed)
            bot.index = proxy
            self.bots[key] = (bot, proxy)
        return self.bots[key]


def _run(todo: Sequence[Run], checkpoint: Path, progress: bool, lines: metrics.LineVectors,
         evaluate_one: Callable[[CharacterData, EvalCase, str], dict]) -> None:
    """Evaluate what is to do, each record appended to the checkpoint as soon as it is done (a progress bar); the
    line vectors embedded meanwhile are saved however it ends."""
    bar, failures = None, 0
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="evaluating", unit="case")
    try:
        with checkpoint.open("a", encoding="utf-8") as sink:
            for d, case, cfg in todo:
                rec = evaluate_one(d, case, cfg)
                sink.write(json.dumps(rec, ensure_ascii=False) + "\n")
                sink.flush()
                failures += bool(rec.get("error"))
                if bar is not None:
                    bar.update(1)
                    if failures:
                        bar.set_postfix_str(f"failures: {failures}", refresh=False)
    finally:
        if bar is not None:
            bar.close()
        lines.save()


def _records(checkpoint: Path, data: Sequence[CharacterData], configs: Sequence[str]) -> list[dict]:
    """The run's records in case order (the last record of a key wins)."""
    wanted = {(d.character.name, c.id, cfg) for d in data for c in d.cases for cfg in configs}
    records = {}
    for rec in _read_jsonl(checkpoint):
        key = (rec["character"], rec["case_id"], rec["config"])
        if key in wanted:
            records[key] = rec  # the last record of a key wins
    return [records[(d.character.name, c.id, cfg)] for d in data for c in d.cases for cfg in configs]


def contrast_summary(contrast: Contrast, data: Sequence[CharacterData], judges: Judges) -> dict[str, Any]:
    """The summary's ``contrast``: where the set came from, who judged whom, and why a column is empty."""
    info = contrast.summary([d.character for d in data])
    judged = set(judges.names)  # a character with no usable line of its own cannot be a judge's class
    info["per_character"] = {k: [n for n in v if n in judged] for k, v in info["per_character"].items()}
    info["why_empty"] = {}
    for d in data:
        name = d.character.name
        why = why_empty(d.character, info["per_character"][name], contrast)
        if why is None and name not in judged:
            why = f"{name} has no line long enough to fit a judge on"
        if why is not None:
            info["why_empty"][name] = why
    return info


def _read_jsonl(path: Path) -> Iterable[dict]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:  # a line cut by the interruption: that case runs again
                continue
