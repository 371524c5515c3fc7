"""Summaries of an evaluation run: ``results.json``, ``summary.json``, ``summary.md`` and ``scores.png``.

``summary.json`` maps each configuration (``full``, ``none``, ``random``, ``system_only``) to its mean
scores under stable names (``answer_support``, ``key_term_recall``, ``cosine``, ``rouge_l``,
``identity``, ``rule_pass_rate``, as the run produced them) plus ``cases`` and ``failures``; beside
them ``by_character`` (the same per character), ``intervals`` (each mean's 95 % bootstrap interval,
cases resampled within each character), ``paired`` (``full - none`` etc.: the mean per-case difference
and its interval), ``contrast`` (which characters the identity and voice judges told each one apart
from, and ``why_empty``: why a character has no identity or voice score), ``reference`` (scores of the
original lines), ``settings`` and ``skipped``. Means are over the cases that produced the score
(failures excluded).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config import EVAL_DEFAULT_CASES
from . import stats

RETRIEVAL_METRICS = ("answer_support", "key_term_recall")
GENERATION_METRICS = ("cosine", "rouge_l", "identity", "voice", "rule_pass_rate")
METRICS = RETRIEVAL_METRICS + GENERATION_METRICS
PLOT_FILE = "scores.png"


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def config_scores(records: Sequence[dict]) -> dict[str, Any]:
    """Mean scores of some records (one configuration): failures are counted, not averaged."""
    ok = [r for r in records if not r.get("error")]
    out: dict[str, Any] = {"cases": len(records), "failures": len(records) - len(ok)}
    for name in METRICS:
        field = "rule_pass" if name == "rule_pass_rate" else name
        values = [float(r[field]) for r in ok if r.get(field) is not None]
        if any(field in r for r in ok) or name in RETRIEVAL_METRICS:
            out[name] = _mean(values)
    return out


def _field(metric: str) -> str:
    return "rule_pass" if metric == "rule_pass_rate" else metric


def case_scores(records: Sequence[dict], metric: str) -> dict[tuple[str, str], float]:
    """(character, case id) -> score, for the records that produced one."""
    field = _field(metric)
    return {(r["character"], r["case_id"]): float(r[field]) for r in records
            if not r.get("error") and r.get(field) is not None}


def _by_character(values: dict[tuple[str, str], float]) -> dict[str, list[float]]:
    groups: dict[str, list[float]] = {}
    for (name, _), v in sorted(values.items()):
        groups.setdefault(name, []).append(v)
    return groups


def intervals(records: Sequence[dict], configs: Sequence[str], seed: int = 0) -> tuple[dict, dict]:
    """(per configuration and metric the mean's 95 % interval, per ``full - other`` the paired difference's)."""
    per: dict[str, dict[str, Any]] = {}
    values = {cfg: {m: case_scores([r for r in records if r["config"] == cfg], m) for m in METRICS} for cfg in configs}
    for cfg in configs:
        per[cfg] = {m: stats.bootstrap(_by_character(v), seed=seed) for m, v in values[cfg].items() if v}
    pairs: dict[str, dict[str, Any]] = {}
    if "full" in configs:
        for other in (c for c in configs if c != "full"):
            pairs[f"full - {other}"] = {m: stats.paired(values["full"][m], values[other][m], seed=seed)
                                        for m in METRICS if values["full"][m] and values[other][m]}
    return per, pairs


def _why_empty(row: dict[str, Any], names: Sequence[str], contrast: dict[str, Any]) -> dict[str, str]:
    """Why a row's identity and voice are null: the reason of each character that has one."""
    reasons = contrast.get("why_empty", {})
    why = "; ".join(reasons[n] for n in names if n in reasons)
    return {m: why for m in ("identity", "voice") if m in row and row[m] is None and why}


def summarize(records: Sequence[dict], settings: dict, reference: dict | None = None,
              skipped: Sequence[str] = (), contrast: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``summary.json`` content (see the module doc)."""
    configs = settings.get("configs") or sorted({r["config"] for r in records})
    contrast = contrast or {}
    names = list(dict.fromkeys(r["character"] for r in records))
    summary: dict[str, Any] = {cfg: config_scores([r for r in records if r["config"] == cfg]) for cfg in configs}
    for cfg in configs:
        if why := _why_empty(summary[cfg], names, contrast):
            summary[cfg]["why_empty"] = why
    by_character: dict[str, dict[str, Any]] = {}
    for name in names:
        by_character[name] = {cfg: config_scores([r for r in records if r["config"] == cfg and r["character"] == name])
                              for cfg in configs}
        for row in by_character[name].values():
            if why := _why_empty(row, [name], contrast):
                row["why_empty"] = why
    summary["by_character"] = by_character
    summary["intervals"], summary["paired"] = intervals(records, configs, settings.get("seed") or 0)
    summary["contrast"] = contrast
    summary["reference"] = reference or {}
    summary["settings"] = settings
    summary["skipped"] = list(skipped)
    return summary


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def markdown(summary: dict[str, Any]) -> str:
    """The summary as Markdown tables: overall by configuration, then per character."""
    configs = summary["settings"].get("configs", [])
    metrics = [m for m in METRICS if any(m in summary[c] for c in configs)]
    s = summary["settings"]
    what = "retrieval only" if s.get("retrieval_only") else f"backend `{s.get('backend')}`"
    if s.get("model"):
        what += f" (`{s['model']}`)"
    n = {None: f"up to {EVAL_DEFAULT_CASES}", 0: "all usable"}.get(s.get("cases"), s.get("cases"))
    lines = [f"Embedder `{s.get('embedder')}`, {what}, top_k {s.get('top_k')}, dense/lexical weights "
             f"{s.get('dense_weight')}/{s.get('lexical_weight')}, {n} cases per character, "
             f"seed {s.get('seed')}.", "", "| configuration | " + " | ".join(metrics) + " | cases | failures |",
             "|---|" + "---|" * (len(metrics) + 2)]
    for c in configs:
        row = summary[c]
        lines.append(f"| {c} | " + " | ".join(_fmt(row.get(m)) for m in metrics)
                     + f" | {row['cases']} | {row['failures']} |")
    lines += ["", "Per character:", "", "| character | configuration | " + " | ".join(metrics) + " | failures |",
              "|---|---|" + "---|" * (len(metrics) + 1)]
    for name, rows in summary["by_character"].items():
        for c in configs:
            row = rows[c]
            lines.append(f"| {name} | {c} | " + " | ".join(_fmt(row.get(m)) for m in metrics)
                         + f" | {row['failures']} |")
    paired = summary.get("paired") or {}
    shown = [m for m in metrics if any(m in p for p in paired.values())]
    if shown:
        lines += ["", "Paired differences (mean per-case difference, 95 % bootstrap interval; bold: excludes 0):", "",
                  "| difference | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
        for label, row in paired.items():
            lines.append(f"| {label} | " + " | ".join(stats.cell(row.get(m), signed=True) for m in shown) + " |")
    contrast = summary.get("contrast") or {}
    if contrast.get("per_character"):
        source = "--compare" if contrast.get("source") == "given" else "the other available characters (default)"
        lines += ["", f"Identity and voice judges, contrast set from {source}:", ""]
        for name, others in contrast["per_character"].items():
            why = contrast.get("why_empty", {}).get(name)
            lines.append(f"- {name}: " + (", ".join(others) if others else f"none: {why}"))
        lines += [f"- left out: {x}" for x in contrast.get("left_out", [])]
    ref = summary.get("reference") or {}
    if ref:
        lines += ["", "The original lines themselves (ceilings):", "",
                  "| character | cases | usable scenes | identity of the original line "
                  "| voice of the original line | best support in any other scene |",
                  "|---|---|---|---|---|---|"]
        for name, r in ref.items():
            lines.append(f"| {name} | {r['cases']} | {r['usable_scenes']} | {_fmt(r['identity'])} | "
                         f"{_fmt(r.get('voice'))} | {_fmt(r['answer_support_ceiling'])} |")
    if summary.get("skipped"):
        lines += ["", "Skipped:", ""] + [f"- {m}" for m in summary["skipped"]]
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: str | os.PathLike) -> Path:
    """Bar charts, one per metric: per-character scores by configuration (matplotlib, the ``[eval]`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("the plot needs matplotlib: pip install 'chatharuhi[eval]'") from exc
    configs = summary["settings"].get("configs", [])
    names = list(summary["by_character"])
    metrics = [m for m in METRICS if any(summary["by_character"][n][c].get(m) is not None
                                         for n in names for c in configs)]
    cols = min(3, max(1, len(metrics)))
    rows = -(-max(1, len(metrics)) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols + 0.6 * len(names), 3.2 * rows), squeeze=False)
    width = 0.8 / max(1, len(configs))
    for ax, metric in zip(axes.flat, metrics):
        for j, cfg in enumerate(configs):
            values = [summary["by_character"][n][cfg].get(metric) or 0.0 for n in names]
            ax.bar([i + (j - (len(configs) - 1) / 2) * width for i in range(len(names))], values, width, label=cfg)
        ax.set_title(metric)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(configs), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.9 if rows == 1 else 0.95))
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_outputs(out: Path, settings: dict, data: Sequence[Any], records: Sequence[dict], summary: dict[str, Any],
                  *, plot_png: bool = True, log: Callable[[str], None] = print) -> None:
    """Write every output file of a run into ``out``."""
    results = {"settings": settings,
               "characters": {d.character.name: {"usable_scenes": d.usable_scenes, "candidates": d.candidates,
                                                 "cases": [c.as_dict() | {"excluded": d.excludes.get(c.id, [])}
                                                           for c in d.cases]} for d in data},
               "records": list(records)}
    (out / "results.json").write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
    (out / "summary.md").write_text(markdown(summary), encoding="utf-8")
    if plot_png:
        try:
            plot(summary, out / PLOT_FILE)
        except ImportError as exc:
            log(f"plot skipped: {exc}")
