"""The "Why this reply" panel: which scenes went into the prompt, and in plain words why none did."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .render import literal
from .state import View

if TYPE_CHECKING:
    from ..character.folder import Character


def no_scene_reason(trace: dict) -> str:
    """One plain sentence on why no scene went into the prompt ("" when at least one did)."""
    scenes = trace.get("scenes", [])
    if any(s.get("included") for s in scenes):
        return ""
    budget = trace.get("story_budget", 0)
    if not scenes:
        return ("No scene went into the prompt: retrieval returned no candidate scene (scene retrieval is off, "
                "or the character has no scenes).")
    too_big = [s for s in scenes if "larger than" in (s.get("reason") or "")]
    if len(too_big) == len([s for s in scenes if "duplicate" not in (s.get("reason") or "")]):
        smallest = min(s.get("tokens", 0) for s in too_big)
        return (f"No scene went into the prompt: all {len(too_big)} retrieved scenes are larger than the story "
                f"budget of {budget} tokens (the smallest is {smallest} tokens). Raise the story budget in "
                f"Settings to at least {smallest}, or split the character's scenes into smaller files.")
    reasons = sorted({s.get("reason") or "not included" for s in scenes})
    return f"No scene went into the prompt ({len(scenes)} candidates: {'; '.join(reasons)})."


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def cache_sentence(trace: dict) -> str:
    """Whether the story was kept from the previous turn and how much of the prompt the model had cached."""
    kept = trace.get("story_kept")
    story = {True: "The story was kept from the previous turn", False: "The story was chosen afresh for this message",
             None: ""}.get(kept, "")
    # The model's own count: the packed prompt plus the start of the reply it was given (the speaker's tag).
    reused, total = trace.get("reused_tokens"), trace.get("model_prompt_tokens") or trace.get("total_tokens")
    if reused is not None and total:
        cached = f"the model had {reused} of the {total} prompt tokens cached and read the other {total - reused}"
        packed = trace.get("total_tokens")
        if packed and total > packed:  # the count above is of the packed prompt only
            cached += f" ({packed} packed, plus {total - packed} of the reply's start it was given: the speaker's tag)"
        return f"{story}; {cached}." if story else f"{cached[0].upper()}{cached[1:]}."
    return f"{story}." if story else ""


def trace_view(trace: dict | None, character: "Character | None") -> View:
    """Summary, scene table, scene texts and the raw trace of a reply (``Trace.as_dict()``)."""
    if not trace:
        return {"summary": "No reply yet in this chat.", "scenes": [], "scene_texts": "", "trace": None}
    parts = " · ".join(f"{k} {v}" for k, v in trace.get("parts", {}).items())
    scenes = trace.get("scenes", [])
    included = trace.get("included_scenes", [s["id"] for s in scenes if s.get("included")])
    summary = (f"**Prompt: {trace.get('total_tokens')} of {trace.get('budget')} tokens** ({parts}); "
               f"story used {trace.get('story_fill', 0):.0%} of its {trace.get('story_budget')}-token share; "
               f"{_count(len(included), 'scene')} and "
               f"{_count(sum(bool(t.get('included')) for t in trace.get('turns', [])), 'earlier turn')} "
               "went into the prompt.")
    if cache := cache_sentence(trace):
        summary = f"{summary} {cache}"
    if reason := no_scene_reason(trace):
        summary = f"**⚠ {literal(reason)}**\n\n{summary}"
    rows = [[s["id"], "" if s.get("score") is None else round(s["score"], 4), s.get("tokens", 0),
             "yes" if s.get("included") else "no", s.get("reason", "")] for s in scenes]
    texts = []
    for s in scenes:
        if not s.get("included") or character is None:
            continue
        try:
            text = character.scene(s["id"]).text
        except KeyError:
            continue
        score = f" — score {s['score']:.4f}" if s.get("score") is not None else ""
        quoted = "\n".join(f"> {literal(line)}  " if line.strip() else ">" for line in text.splitlines())
        texts.append(f"**{literal(s['id'])}**{score}\n\n{quoted}")
    return {"summary": summary, "scenes": rows, "scene_texts": "\n\n".join(texts), "trace": trace}
