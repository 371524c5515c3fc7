"""Cutting a character's scenes: the blocks around each of their lines, about 500 tokens a scene, written in
the project's ``speaker:「line」`` form with narration (and every quotation not sure enough) as stage text."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..config import BUILD_MAX_SCENES, BUILD_SCENE_TOKENS
from .analysis import Analysis, Segment

CONTEXT_BLOCKS = 3  # blocks kept before and after the character's line
NARRATOR = {"zh": "旁白", "en": "Narrator"}


@dataclass(frozen=True)
class BuiltScene:
    """One scene: its file name, its text, and how many of the character's lines it holds."""

    name: str
    text: str
    lines: int
    source: int
    blocks: tuple[int, int]  # first and last block (inclusive)


def estimate_tokens(text: str) -> int:
    """A cheap token estimate: about four characters a token in English, one CJK character about one token."""
    cjk = sum(1 for c in text if "\u4e00" <= c <= "\u9fff")
    return cjk + (len(text) - cjk) // 4 + 1


def cut_scenes(analysis: Analysis, member: int, scene_tokens: int = BUILD_SCENE_TOKENS,
               max_scenes: int = BUILD_MAX_SCENES) -> list[BuiltScene]:
    """The character's scenes, in source order."""
    language = analysis.cast.language
    narrator = NARRATOR["zh" if language == "zh" else "en"]
    out: list[BuiltScene] = []
    for si, blocks in enumerate(analysis.blocks):
        hot = [b for b, segs in enumerate(blocks) if any(_theirs(analysis, s, member) for s in segs)]
        if not hot:
            continue
        rendered = [_render(analysis, segs, narrator) for segs in blocks]
        cost = [estimate_tokens(r) for r in rendered]
        windows = _windows(hot, len(blocks), cost, scene_tokens)
        for a, b in windows:
            text = "\n".join(r for r in rendered[a:b + 1] if r)
            count = sum(1 for x in range(a, b + 1) for s in blocks[x] if _theirs(analysis, s, member))
            if count:
                out.append(BuiltScene("", text, count, si, (a, b)))
    out = out[:max_scenes]
    width = len(str(len(out)))
    return [BuiltScene(f"{i:0{width}d}_{_slug(s, analysis, member)}.txt", s.text, s.lines, s.source, s.blocks)
            for i, s in enumerate(out, start=1)]


def _theirs(analysis: Analysis, seg: Segment, member: int) -> bool:
    if seg.kind != "line" or seg.line is None:
        return False
    line = analysis.lines[seg.line]
    return line.speaker == member and line.confidence >= analysis.threshold


def _windows(hot: list[int], n: int, cost: list[int], budget: int) -> list[tuple[int, int]]:
    """Block ranges around the hot blocks: context either side, merged while they fit the budget."""
    out: list[tuple[int, int]] = []
    for h in hot:
        if out and out[-1][1] >= h:
            continue  # already inside the last window
        a, b = h, h
        used = cost[h]
        # grow after first (the reply to the line), then before, one block at a time, within the budget
        for _ in range(CONTEXT_BLOCKS):
            for side in ("after", "before"):
                x = b + 1 if side == "after" else a - 1
                if 0 <= x < n and (not out or x > out[-1][1]) and used + cost[x] <= budget:
                    used += cost[x]
                    a, b = (a, x) if side == "after" else (x, b)
        # take in the next hot blocks while the scene still fits
        while True:
            nxt = next((x for x in hot if x > b), None)
            if nxt is None or nxt - b > CONTEXT_BLOCKS or used + sum(cost[b + 1:nxt + 1]) > budget:
                break
            used += sum(cost[b + 1:nxt + 1])
            b = nxt
        out.append((a, b))
    return out


def _render(analysis: Analysis, segs: list[Segment], narrator: str) -> str:
    """One block as scene lines: ``Name:「…」`` for sure lines, narration (quotes kept) for the rest."""
    lines: list[str] = []
    pending: list[str] = []
    zh = analysis.cast.language == "zh"

    def flush() -> None:
        text = _clean(" ".join(pending))
        if text:
            lines.append(f"{narrator}:{text}")
        pending.clear()

    for s in segs:
        if s.kind == "narration":
            tag = _clean(s.text)
            if not pending and lines and lines[-1].endswith("」") and _is_tag(tag):
                lines[-1] += f"({tag.rstrip('.。')})"  # "said Poirot." becomes the line's stage direction
                continue
            pending.append(s.text)
            continue
        line = analysis.lines[s.line]
        name = analysis.speaker(line)
        words = _clean(s.text)
        if name is None:
            pending.append(f"“{words}”" if zh else f"\"{words}\"")
            continue
        flush()
        lines.append(f"{name}:「{words}」")
    flush()
    return "\n".join(lines)


def _is_tag(text: str) -> bool:
    """A short speech tag after a line: ``said Poirot``, ``he replied``, ``她问。``."""
    if not text or len(text) > 48 or any(c in text for c in "\"“”「」"):
        return False
    return text[0].islower() or ("\u4e00" <= text[0] <= "\u9fff" and len(text) <= 12 and text[-1] in "。，")


def _clean(text: str) -> str:
    """One line: whitespace collapsed (hard-wrapped books); corner brackets, which would end a line, become 『』."""
    text = " ".join(text.split())
    return text.replace("「", "『").replace("」", "』").strip(" ,;")


def _slug(scene: BuiltScene, analysis: Analysis, member: int) -> str:
    """A short file-name tag from the character's first line in the scene."""
    marker = f"{analysis.cast.members[member].name}:「"
    at = scene.text.find(marker)
    words = scene.text[at + len(marker):].split("」", 1)[0] if at >= 0 else "scene"
    slug = re.sub(r"[^\w]+", "_", words)[:24].strip("_")
    return slug or "scene"
