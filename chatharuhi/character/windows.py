"""Long scenes as overlapping windows of whole lines, so that a story budget of any size gets the best-matching lines.

ChatHaruhi's guideline is at most about 500 tokens per passage. A scene longer than ``WINDOW_TOKENS``
(estimated without a tokenizer: a CJK character is about one token, other text about four characters
per token) is indexed as windows of consecutive whole lines, each within the limit, the next one
starting ``WINDOW_OVERLAP_LINES`` lines before the previous one ends. A window's id is
``<scene id>#<first>-<last>`` (line numbers within the scene), so the trace shows which lines went in.

When even one window is larger than the story budget (a small model's short prompt), ``best_lines``
cuts it down to the run of whole lines around the line that best matches the user's message.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Sequence

from ..config import DEFAULT_NARRATORS, WINDOW_OVERLAP_LINES, WINDOW_TOKENS
from ..types import Scene
from .lines import parse_scene

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")
_WORD = re.compile(r"[A-Za-z0-9]+")


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate: one token per CJK character, one per four other characters."""
    cjk = len(_CJK.findall(text))
    return cjk + (len(text) - cjk + 3) // 4


def scene_of(part_id: str) -> str:
    """The whole scene's id for a scene or window id (``"a.txt#3-9"`` -> ``"a.txt"``)."""
    base, sep, span = part_id.rpartition("#")
    return base if sep and re.fullmatch(r"\d+-\d+", span) else part_id


def window_id(scene_id: str, first: int, last: int) -> str:
    """The id of the window of ``scene_id`` from line ``first`` to line ``last`` (1-based, inclusive)."""
    return f"{scene_id}#{first}-{last}"


def cut(scene: Scene, first: int, last: int, narrators: Iterable[str] = DEFAULT_NARRATORS) -> Scene:
    """The window of ``scene`` from line ``first`` to ``last`` of its text, as a scene of its own."""
    raw = scene.text.split("\n")
    body = parse_scene(scene.id, "\n".join(raw[first - 1:last]), frozenset(narrators))
    return Scene(window_id(scene.id, first, last), body.text, body.lines, source=scene.id, span=(first, last))


def scene_windows(scene: Scene, max_tokens: int = WINDOW_TOKENS, overlap: int = WINDOW_OVERLAP_LINES,
                  narrators: Iterable[str] = DEFAULT_NARRATORS) -> list[Scene]:
    """``[scene]`` if it fits ``max_tokens``, else its overlapping windows of whole lines."""
    if estimate_tokens(scene.text) <= max_tokens:
        return [scene]
    raw = scene.text.split("\n")
    costs = [estimate_tokens(line) + 1 for line in raw]
    windows, start = [], 0
    while start < len(raw):
        end, used = start, 0
        while end < len(raw) and (end == start or used + costs[end] <= max_tokens):
            used += costs[end]
            end += 1  # a single line over the limit is a window of its own: lines are never split
        windows.append(cut(scene, start + 1, end, narrators))
        if end >= len(raw):
            break
        start = max(start + 1, end - overlap)
    return windows


def windows(scenes: Sequence[Scene], max_tokens: int = WINDOW_TOKENS, overlap: int = WINDOW_OVERLAP_LINES,
            narrators: Iterable[str] = DEFAULT_NARRATORS) -> list[Scene]:
    """Every scene, long ones replaced by their windows, in order."""
    return [w for s in scenes for w in scene_windows(s, max_tokens, overlap, narrators)]


def _terms(text: str) -> set[str]:
    chars = _CJK.findall(text)
    return {a + b for a, b in zip(chars, chars[1:])} | set(chars) | {w.lower() for w in _WORD.findall(text)}


def best_lines(scene: Scene, query: str, fits: Callable[[str], bool],
               narrators: Iterable[str] = DEFAULT_NARRATORS) -> Scene | None:
    """The longest run of whole lines around the line that best matches ``query`` for which ``fits`` holds."""
    raw = scene.text.split("\n")
    wanted = _terms(query)
    scores = [len(_terms(line) & wanted) if line.strip() else -1 for line in raw]
    offset = scene.span[0] - 1 if scene.span else 0
    base = scene.source or scene.id
    whole = Scene(base, scene.text)  # numbering within this text, then shifted to the scene's own lines
    best = max(range(len(raw)), key=lambda i: (scores[i], -i))
    lo = hi = best
    if not fits(raw[best]):
        return None
    while True:
        grown = False
        for i in sorted((j for j in (lo - 1, hi + 1) if 0 <= j < len(raw)), key=lambda j: -scores[j]):
            a, b = min(lo, i), max(hi, i)
            if fits("\n".join(raw[a:b + 1])):
                lo, hi, grown = a, b, True
        if not grown:
            break
    window = cut(whole, lo + 1, hi + 1, narrators)
    first, last = lo + 1 + offset, hi + 1 + offset
    return Scene(window_id(base, first, last), window.text, window.lines, source=base, span=(first, last))
