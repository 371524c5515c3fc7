"""Scoring: one character prepared for the evaluation (its cases, its lines' vectors per scene, its key terms, what
each case excludes), one case under one configuration scored, and the original answers' own scores (the ceilings)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..character.folder import Character
from ..character.windows import scene_of
from ..chat.chatbot import Chatbot
from ..errors import ChatHaruhiError
from . import metrics
from .cases import EvalCase
from .exclusion import EvalIndex, ExclusionLeak
from .judges import Fitted, Judges

EVAL_MAX_TOKENS = 256  # reply cap: answers are one line, and a runaway small model should not cost minutes


@dataclass
class CharacterData:
    """One character prepared for evaluation: cases, its lines' vectors per scene, centroid, key terms."""

    character: Character
    cases: list[EvalCase]
    usable_scenes: int
    candidates: int
    lines_by_scene: dict[str, np.ndarray] = field(default_factory=dict)
    key_terms: metrics.KeyTerms | None = None
    excludes: dict[str, list[str]] = field(default_factory=dict)  # case id -> scenes excluded

    @property
    def own_names(self) -> set[str]:
        c = self.character
        return {c.speaker, c.display_name, *c.aliases}


def judges_for(judges: Judges, d: CharacterData, case: EvalCase) -> Fitted:
    """The judges for one case: fitted without its excluded scenes (its source scene, verbatim copies)."""
    return judges.fit({d.character.name: d.excludes[case.id]})


def evaluate(d: CharacterData, case: EvalCase, cfg: str, bot_proxy: tuple[Chatbot, EvalIndex],
              answer: np.ndarray, fitted: Fitted, lines: metrics.LineVectors,
              retrieval_only: bool, max_tokens: int = EVAL_MAX_TOKENS) -> dict:
    """One case under one configuration: its prompt (and, unless ``retrieval_only``, the reply), scored; a failed
    reply is recorded, not raised (an excluded scene reaching the prompt is)."""
    bot, proxy = bot_proxy
    proxy.exclude = set(d.excludes[case.id])
    history = [] if cfg == "system_only" else list(case.history)
    rec: dict[str, Any] = {"character": d.character.name, "case_id": case.id, "config": cfg,
                           "scene_id": case.scene_id, "error": None}
    start = time.perf_counter()
    try:
        proxy.last_ids = []
        if retrieval_only:
            plan = bot.prepare(case.query, case.query_role, exclude=proxy.exclude, history=history)
            trace, reply = plan.trace, None
        else:
            stream = bot.stream(case.query, case.query_role, history=history, max_tokens=max_tokens)
            reply = stream.text()
            trace = stream.trace
    except ExclusionLeak:
        raise
    except (ChatHaruhiError, Exception) as exc:  # noqa: BLE001 - any backend failure is recorded, the run goes on
        rec["error"] = f"{type(exc).__name__}: {exc}"
        rec["seconds"] = round(time.perf_counter() - start, 3)
        return rec
    included = list(dict.fromkeys(scene_of(i) for i in trace.included_scenes))  # windows count as their scene
    rec["retrieved"] = list(proxy.last_ids)
    rec["scenes"] = included
    rec["answer_support"] = round(_support(d, answer, included), 4)
    rec["answer_support_retrieved"] = round(_support(d, answer, rec["retrieved"]), 4)  # before packing
    terms = d.key_terms.key_terms(case.answer, d.excludes[case.id])
    rec["key_terms"] = terms
    recall = metrics.key_term_recall(included, d.key_terms.relevant(terms, d.excludes[case.id]))
    rec["key_term_recall"] = None if recall is None else round(recall, 4)
    rec["prompt_tokens"] = trace.total_tokens
    if reply is not None:
        vec = lines.embed([reply])[0] if reply.strip() else np.zeros_like(answer)
        rec["reply"] = reply
        rec["cosine"] = round(metrics.cosine(vec, answer), 4)
        rec["rouge_l"] = round(metrics.rouge_l(reply, case.answer, case.language), 4)
        name = d.character.name
        own = fitted.centroids.get(name)
        others = {k: v for k, v in fitted.centroids.items() if k != name}
        score, margin = metrics.identity(vec, own, others) if own is not None else (None, None)
        rec["identity"] = score
        rec["identity_margin"] = None if margin is None else round(margin, 4)
        voice = fitted.voice if fitted.voice is not None and name in fitted.voice.names else None
        rec["voice"] = None if voice is None else float(voice.log_odds(reply or " ", name) > 0)
        other_names = (d.character.speakers | {case.query_role, bot.user_role}) - d.own_names
        checks = metrics.rule_checks(reply, case.language, d.own_names, other_names)
        rec["rules"] = checks
        rec["rule_pass"] = checks["rule_pass"]
    rec["seconds"] = round(time.perf_counter() - start, 3)
    return rec


def _support(d: CharacterData, answer: np.ndarray, scene_ids: Sequence[str]) -> float:
    found = [d.lines_by_scene[s] for s in scene_ids if s in d.lines_by_scene]
    return metrics.answer_support(answer, np.concatenate(found) if found else None)


def reference_scores(data: list[CharacterData], answer_vecs: dict, judges: Judges) -> dict:
    """Scores of the original answers themselves: the identity and voice ceilings (judged without the case's
    scenes, as replies are) and the best support any scene gives."""
    out: dict[str, Any] = {}
    for d in data:
        ident, voice, ceiling = [], [], []
        name = d.character.name
        for c in d.cases:
            vec = answer_vecs[(name, c.id)]
            fitted = judges_for(judges, d, c)
            own = fitted.centroids.get(name)
            others = {k: v for k, v in fitted.centroids.items() if k != name}
            if own is not None and others:
                ident.append(metrics.identity(vec, own, others)[0])
            if fitted.voice is not None and name in fitted.voice.names:
                voice.append(float(fitted.voice.log_odds(c.answer, name) > 0))
            allowed = [m for s, m in d.lines_by_scene.items() if s not in d.excludes[c.id]]
            ceiling.append(metrics.answer_support(vec, np.concatenate(allowed) if allowed else None))
        out[d.character.name] = {
            "cases": len(d.cases), "usable_scenes": d.usable_scenes, "candidates": d.candidates,
            "identity": float(np.mean(ident)) if ident else None,
            "voice": float(np.mean(voice)) if voice else None,
            "answer_support_ceiling": float(np.mean(ceiling)) if ceiling else None,
        }
    return out
