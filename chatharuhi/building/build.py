"""``build_character``: sources in, a validated character folder out (and the per-quotation report)."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..config import BUILD_MAX_LLM_CALLS, BUILD_MIN_LINES, BUILD_THRESHOLD
from ..errors import InputError, NameNotInSource, TooFewLines
from ..options import strict
from .analysis import Analysis, analyse
from .scenes import cut_scenes
from .writer import draft_system_prompt, folder_name_for, manifest_text, write_folder


@dataclass
class BuildResult:
    """What was built: the folder, the character's line and scene counts, and the analysis behind it."""

    path: Path | None
    name: str
    lines: int
    scenes: int
    analysis: Analysis


def find_member(analysis: Analysis, name: str) -> int:
    """The cast index for the requested character; an unknown name lists the closest speakers found."""
    cast = analysis.cast
    who = cast.index(name)
    if who is None:
        folded = name.casefold()
        who = next((i for i, m in enumerate(cast.members) if folded in (n.casefold() for n in m.names)), None)
    counts = analysis.counts()
    if who is not None and (counts.get(cast.members[who].name) or _named_in(analysis, who)):
        return who
    speakers = [n for n, _ in counts.most_common()]
    everyone = list(dict.fromkeys(speakers + [m.name for m in cast.members]))
    forms = {n: m.name for m in cast.members for n in m.names}
    close = difflib.get_close_matches(name, list(forms), n=5, cutoff=0.5)
    close += [forms[f] for f in forms if name.casefold() in f.casefold() or f.casefold() in name.casefold()]
    raise NameNotInSource(name, list(dict.fromkeys(forms.get(c, c) for c in close))[:5], everyone)


def _named_in(analysis: Analysis, who: int) -> bool:
    return any(line.speaker == who for line in analysis.lines)


def write_report(analysis: Analysis, path: str | Path) -> Path:
    """``--report``: one JSON object per quotation or turn, written to a temporary file and moved into place."""
    import os

    p = Path(path).expanduser()
    tmp = p.with_name(f".{p.name}.partial")
    with tmp.open("w", encoding="utf-8") as f:
        for row in analysis.report_rows():
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, p)
    return p


@strict
def build_character(sources: list[str | Path] | str | Path, character: str, out: str | Path | None = None,
                    aliases: tuple[str, ...] | list[str] = (), cast: Any = None, report: str | Path | None = None,
                    min_lines: int = BUILD_MIN_LINES, threshold: float = BUILD_THRESHOLD, force: bool = False,
                    llm: Any = None, max_llm_calls: int = BUILD_MAX_LLM_CALLS, work: str | None = None,
                    progress: bool = False, log: Callable[[str], None] | None = None,
                    analysis: Analysis | None = None, dry_run: bool = False) -> BuildResult:
    """Build ``character``'s folder from novels, subtitles or scripts.

    ``cast`` is a cast file (or ``Cast``); without it the cast is found in the text. ``llm`` (a backend name or
    object) sends the uncertain quotations to a model; with ``dry_run`` nothing is written."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    if not sources and analysis is None:
        raise InputError("build_character() needs at least one source file")
    if not character or not character.strip():
        raise InputError("build_character() needs the character's name (character=...)")
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"threshold must be between 0 and 1, not {threshold}")
    if min_lines < 1:
        raise InputError(f"min_lines must be at least 1, not {min_lines}")
    say = log or (lambda m: None)
    if analysis is None:
        analysis = analyse(list(sources), cast=cast, character=character, aliases=tuple(aliases),
                           threshold=threshold, progress=progress, log=say)
    else:
        analysis.threshold = threshold
    if llm is not None:
        from .llm import llm_pass

        analysis.llm_note = llm_pass(analysis, llm, max_calls=max_llm_calls, log=say, progress=progress)
    if report is not None:
        say(f"report: {write_report(analysis, report)}")
    member = find_member(analysis, character.strip())
    name = analysis.cast.members[member].name
    count = analysis.counts().get(name, 0)
    if count < min_lines:
        raise TooFewLines(name, count, min_lines)
    scenes = cut_scenes(analysis, member)
    work = work or ", ".join(dict.fromkeys(s.title for s in analysis.sources if s.title)) or "the source"
    if dry_run:
        return BuildResult(None, name, count, len(scenes), analysis)
    folder = Path(out).expanduser() if out is not None else Path.cwd() / folder_name_for(name)
    prompt = draft_system_prompt(analysis, member, work)
    if llm is not None:
        from .llm import llm_system_prompt

        prompt = llm_system_prompt(analysis, member, work, llm, fallback=prompt, log=say)
    write_folder(folder, prompt, manifest_text(analysis, member, folder.name, work), scenes, force)
    return BuildResult(folder, name, count, len(scenes), analysis)
