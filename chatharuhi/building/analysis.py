"""Every source read, the cast settled and every quotation or turn attributed: what the report, the cast
table and the scenes are made from."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import BUILD_THRESHOLD
from .cast import Cast, Member, read_cast
from .castfind import discover_cast
from .prose import attribute_prose
from .sources import Source, read_source


@dataclass
class Line:
    """One quotation (prose) or turn (subtitles, scripts): where it is and who said it."""

    source: int  # index into Analysis.sources
    start: int
    end: int
    block: int  # the paragraph (prose) or turn index it belongs to
    speaker: int | None  # the best guess, a cast index
    confidence: float
    rule: str


@dataclass
class Segment:
    """A piece of one block in reading order: narration, or one of the lines."""

    kind: str  # "narration" | "line"
    text: str
    line: int | None = None  # index into Analysis.lines


@dataclass
class Analysis:
    """Sources, cast and lines; ``threshold`` decides which guesses count."""

    sources: list[Source]
    cast: Cast
    lines: list[Line]
    blocks: list[list[list[Segment]]]  # per source, per block, its segments
    threshold: float = BUILD_THRESHOLD
    narrators: dict[int, int] = field(default_factory=dict)  # source -> cast index of its first-person narrator
    llm_note: str = ""

    def speaker(self, line: Line) -> str | None:
        """The main name of the line's speaker when the guess is sure enough, else None."""
        if line.speaker is None or line.confidence < self.threshold:
            return None
        return self.cast.members[line.speaker].name

    def counts(self) -> Counter:
        """Lines per main name, at the threshold."""
        return Counter(n for line in self.lines if (n := self.speaker(line)))

    def text(self, line: Line) -> str:
        """The line exactly as it is in the decoded source."""
        return self.sources[line.source].text[line.start:line.end]

    def report_rows(self):
        """One dict per line: the ``--report`` JSONL records."""
        for line in self.lines:
            guess = self.cast.members[line.speaker].name if line.speaker is not None else None
            yield {"source": self.sources[line.source].path, "start": line.start, "end": line.end,
                   "text": self.text(line), "speaker": self.speaker(line), "confidence": round(line.confidence, 3),
                   "rule": line.rule, "guess": guess}


def load_cast(cast: Cast | str | Path | None, language: str) -> Cast | None:
    """A cast object, a cast file's path, or None."""
    if cast is None or isinstance(cast, Cast):
        return cast
    return read_cast(cast, language)


def analyse(sources: list[str | Path], cast: Cast | str | Path | None = None, character: str | None = None,
            aliases: tuple[str, ...] = (), threshold: float = BUILD_THRESHOLD, progress: bool = False,
            log: Callable[[str], None] | None = None, max_source_bytes: int | None = None) -> Analysis:
    """Read every source, settle the cast (given, else found) and attribute every line."""
    say = log or (lambda m: None)
    read = [read_source(s) if max_source_bytes is None else read_source(s, max_source_bytes) for s in sources]
    for s in read:
        say(s.describe())
    language = _language(read)
    seeds = _seeds(character, aliases)
    given = load_cast(cast, language)
    if given is not None:
        given = _with_seed(given, seeds)
    else:
        tagged = Counter(t.speaker for s in read for t in s.turns if t.speaker)
        given = discover_cast([s.text for s in read if s.kind == "prose"], language, tagged, seeds)
        for merge in given.merges:
            say(f"merged names: {merge}")
    text_all = "\n".join(s.text for s in read if s.kind == "prose")
    cast_final = given.with_genders(text_all) if text_all else given
    lines: list[Line] = []
    blocks: list[list[list[Segment]]] = []
    narrators: dict[int, int] = {}
    bar = _bar(read, progress)
    for si, src in enumerate(read):
        if src.kind == "prose":
            blocks.append(_prose_blocks(si, src, cast_final, lines, narrators))
        else:
            blocks.append(_turn_blocks(si, src, cast_final, lines))
        if bar is not None:
            bar.update(len(src.text))
    if bar is not None:
        bar.close()
    return Analysis(read, cast_final, lines, blocks, threshold, narrators)


def _bar(read: list[Source], progress: bool):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=sum(len(s.text) for s in read), unit="char", unit_scale=True, desc="attributing")


def _language(read: list[Source]) -> str:
    zh = sum(len(s.text) for s in read if s.language == "zh")
    return "zh" if zh * 2 >= sum(len(s.text) for s in read) else "en"


def _seeds(character: str | None, aliases: tuple[str, ...]) -> list[Member]:
    if not character:
        return []
    return [Member(character.strip(), tuple(a.strip() for a in aliases if a.strip() and a.strip() != character))]


def _with_seed(cast: Cast, seeds: list[Member]) -> Cast:
    """The given cast with the requested character's aliases added to their line (or the character added)."""
    members = list(cast.members)
    for seed in seeds:
        idx = next((i for i, m in enumerate(members) if seed.name in m.names), None)
        if idx is None:
            members.insert(0, seed)
        else:
            m = members[idx]
            members[idx] = Member(m.name, tuple(dict.fromkeys([*m.aliases, *seed.aliases])), m.gender)
    return Cast(members, cast.language, list(cast.merges))


def _prose_blocks(si: int, src: Source, cast: Cast, lines: list[Line], narrators: dict[int, int]):
    result = attribute_prose(src.text, cast, src.language)
    if result.narrator is not None:
        narrators[si] = result.narrator
    ctx = result.ctx
    first = len(lines)
    for a in result.attributions:
        q = ctx.quotes[a.quote]
        lines.append(Line(si, q.start, q.end, q.paragraph, a.speaker, a.confidence, a.rule))
    out = []
    for p, para in enumerate(ctx.paragraphs):
        segs: list[Segment] = []
        pos = para.start
        for qi in ctx.by_paragraph.get(p, []):
            q = ctx.quotes[qi]
            if q.start - 1 > pos:
                segs.append(Segment("narration", src.text[pos:q.start - 1]))
            segs.append(Segment("line", src.text[q.start:q.end], first + qi))
            pos = min(q.end + 1, para.end)
        if pos < para.end:
            segs.append(Segment("narration", src.text[pos:para.end]))
        out.append(segs)
    return out


def _turn_blocks(si: int, src: Source, cast: Cast, lines: list[Line]):
    out = []
    for n, t in enumerate(src.turns):
        if t.speaker is None and t.rule == "narration":
            out.append([Segment("narration", t.shown)])
            continue
        who = cast.index(t.speaker) if t.speaker else None
        if who is None and t.speaker:
            who = next((i for i, m in enumerate(cast.members) if t.speaker.casefold() in
                        (x.casefold() for x in m.names)), None)
        lines.append(Line(si, t.start, t.end, n, who, 1.0 if who is not None else 0.0,
                          t.rule if who is not None else (t.rule if t.speaker is None else "not-in-cast")))
        out.append([Segment("line", t.shown, len(lines) - 1)])
    return out


def source_key(src: Source) -> str:
    """A stable key for a source's text (the LLM cache is per source)."""
    return hashlib.sha256(src.text.encode("utf-8")).hexdigest()[:24]
