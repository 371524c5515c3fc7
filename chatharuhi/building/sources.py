"""Sources: a novel (.txt, .epub), subtitles (.srt, .ass/.ssa) or a script, read into text and, for the
formats that carry speakers, turns.

A subtitle or script turn is a span of the decoded text with the speaker the format gives (ASS ``Name``,
``NAME: line``, ``NAME：「line」``, a screenplay's capitalised name above the line); SRT gives none unless a
cue starts with ``NAME:``. Prose has no turns: its quotations are found and attributed (prose.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..character.folder import detect_language
from ..config import BUILD_MAX_SOURCE_BYTES, DEFAULT_NARRATORS
from ..errors import SourceError
from .decoding import decode, read_bytes

KINDS = ("prose", "srt", "ass", "script")
_SRT_TIME = re.compile(r"^\s*(\d{1,2}):(\d{2}):(\d{2})[,.](\d{1,3})\s*-->\s*(\d{1,2}):(\d{2}):(\d{2})[,.](\d{1,3})")
_ASS_TIME = re.compile(r"^\d{1,2}:\d{2}:\d{2}[.:]\d{1,3}$")
_WORDCH = r"[^\s:：「」\"“”,，.。!！?？()（）\[\]]"
_TAG = re.compile(rf"^\s*(?P<name>{_WORDCH}{{1,24}}(?:[ ·.]{_WORDCH}{{1,24}}){{0,2}})\s*[:：]\s*")
_SCREEN_NAME = re.compile(r"^\s*(?P<name>[A-Z][A-Z .'\-]{0,30}[A-Z.])\s*"
                          r"(?:\((?:V\.O\.|O\.S\.|CONT'D|cont'd|O\.C\.)\))?\s*$")
_ASS_OVERRIDE = re.compile(r"\{[^}]*\}")


@dataclass(frozen=True)
class Turn:
    """A line a format gives: ``text[start:end]`` in the source, who the format says speaks it (or None)."""

    start: int
    end: int
    speaker: str | None
    rule: str  # "ass-name", "script-tag", "screenplay", "srt-tag", "srt-untagged", "narration"
    shown: str = ""  # the words as they should appear in a scene (ASS override tags and \N removed)


@dataclass
class Source:
    """One source file, decoded."""

    path: str  # as given
    text: str
    encoding: str
    kind: str
    language: str
    turns: list[Turn] = field(default_factory=list)
    title: str = ""

    def describe(self) -> str:
        """One line for the user: what was read and how."""
        what = {"prose": "prose", "srt": "SRT subtitles", "ass": "ASS subtitles", "script": "a script"}[self.kind]
        return (f"{self.path}: {what}, {len(self.text):,} characters, {self.encoding}, "
                f"{'Chinese' if self.language == 'zh' else 'English'}")


def read_source(path: str | Path, max_bytes: int = BUILD_MAX_SOURCE_BYTES) -> Source:
    """Read and classify a source file; every failure is a ``SourceError`` naming the file and the fix."""
    given = str(path)
    p = Path(path).expanduser()
    suffix = p.suffix.lower()
    if suffix == ".epub":
        from .epub import read_epub

        text, title = read_epub(p, max_bytes)
        return _prose(given, text, "utf-8 (epub)", title)
    decoded = decode(read_bytes(p, max_bytes), p)
    text = decoded.text
    if suffix == ".srt":
        return _turns(given, text, decoded.encoding, "srt", parse_srt(text, p), p.stem)
    if suffix in (".ass", ".ssa"):
        return _turns(given, text, decoded.encoding, "ass", parse_ass(text, p), p.stem)
    turns = parse_script(text)
    if turns is not None:
        return _turns(given, text, decoded.encoding, "script", turns, p.stem)
    return _prose(given, text, decoded.encoding, p.stem)


def _turns(given: str, text: str, encoding: str, kind: str, turns: list[Turn], title: str) -> Source:
    """A subtitle or script source; its language is that of the spoken words, not of the format's keywords."""
    return Source(given, text, encoding, kind, detect_language(" ".join(t.shown for t in turns[:2000])), turns, title)


def _prose(given: str, text: str, encoding: str, title: str) -> Source:
    if not any(ch.isalpha() for ch in text[:100_000]):
        raise SourceError("has no words in it: give a novel, subtitles or a script", given)
    return Source(given, text, encoding, "prose", detect_language(text[:200_000]), [], title)


def _line_spans(text: str):
    pos = 0
    for n, line in enumerate(text.split("\n"), start=1):
        yield n, pos, line
        pos += len(line) + 1


def _tagged(text: str, a: int, b: int, rule_tagged: str, rule_plain: str) -> Turn:
    """A turn from ``text[a:b]``, with its ``NAME:`` tag read off when there is one."""
    line = text[a:b]
    m = _TAG.match(line)
    if m and m["name"].strip() in DEFAULT_NARRATORS:  # 旁白: / Narrator: is stage text, not a speaker
        return Turn(a + m.end(), b, None, rule_plain, line[m.end():].strip())
    if m and len(line) > m.end() and _speaker_like(m["name"].strip()):
        start = a + m.end()
        body = text[start:b].strip()
        inner = body[1:-1] if body[:1] in "「“\"" and body[-1:] in "」”\"" else body
        offset = text.index(inner, start) if inner else start
        return Turn(offset, offset + len(inner), m["name"].strip(), rule_tagged, inner)
    return Turn(a, b, None, rule_plain, line.strip())


def _speaker_like(name: str) -> bool:
    """A script's speaker tag: a short name (``HOLMES``, ``Mr. Holmes``, ``春日``), not narration that ends in a colon
    (``少安对他的朋友说：``, ``He said:``)."""
    if any("\u4e00" <= c <= "\u9fff" for c in name):
        return len(name) <= 6 and not name.endswith(("说", "问", "道", "喊", "答", "叫", "讲", "骂", "嚷"))
    words = name.split()
    return bool(words) and all(w[0].isupper() or not w[0].isalpha() for w in words)


def parse_srt(text: str, path: Path | str = "<srt>") -> list[Turn]:
    """The cues of an SRT file; a cue without a valid ``start --> end`` line names its line number."""
    turns: list[Turn] = []
    state = "index"
    cues = 0
    for n, pos, line in _line_spans(text):
        stripped = line.strip()
        if not stripped:
            state = "index"
            continue
        if state == "index":
            if stripped.isdigit():
                state = "time"
                continue
            state = "time"  # some files omit the number
        if state == "time":
            if not _SRT_TIME.match(stripped):
                raise SourceError(f"line {n}: expected a timestamp like '00:01:02,500 --> 00:01:04,000', found "
                                  f"{stripped[:60]!r}; fix or remove that cue", path)
            state = "text"
            cues += 1
            continue
        a = pos + (len(line) - len(line.lstrip()))
        b = pos + len(line.rstrip())
        if text[a:b].startswith(("- ", "-")) and len(text[a:b]) > 1:  # "- Hi." "- Hello.": two speakers in a cue
            a += 1
            while a < b and text[a] == " ":
                a += 1
        turns.append(_tagged(text, a, b, "srt-tag", "srt-untagged"))
    if not cues:
        raise SourceError("has no subtitle cues (number, 'start --> end' line, text)", path)
    return turns


def parse_ass(text: str, path: Path | str = "<ass>") -> list[Turn]:
    """The ``Dialogue:`` events of an ASS/SSA file, with each line's ``Name`` as its speaker."""
    fields: list[str] | None = None
    in_events = False
    turns: list[Turn] = []
    for n, pos, line in _line_spans(text):
        stripped = line.strip()
        if stripped.startswith("["):
            in_events = stripped.lower() == "[events]"
            continue
        if not in_events:
            continue
        if stripped.lower().startswith("format:"):
            fields = [f.strip().lower() for f in stripped.split(":", 1)[1].split(",")]
            continue
        if not stripped.lower().startswith("dialogue:"):
            continue
        if fields is None or "text" not in fields:
            raise SourceError(f"line {n}: a Dialogue line before the [Events] Format line that names its fields",
                              path)
        body_at = line.index(":") + 1
        values = line[body_at:].split(",", len(fields) - 1)
        if len(values) != len(fields):
            raise SourceError(f"line {n}: {len(values)} fields where the Format line has {len(fields)}", path)
        record = dict(zip(fields, (v.strip() for v in values)))
        for key in ("start", "end"):
            if key in record and not _ASS_TIME.match(record[key]):
                raise SourceError(f"line {n}: the {key} time {record[key]!r} is not H:MM:SS.cc; fix that line", path)
        raw = values[-1]
        a = pos + body_at + len(line[body_at:]) - len(raw)
        lead = len(raw) - len(raw.lstrip())
        a += lead
        b = pos + len(line.rstrip())
        shown = _ASS_OVERRIDE.sub("", text[a:b]).replace("\\N", " ").replace("\\n", " ").strip()
        if shown:
            turns.append(Turn(a, b, record.get("name") or None, "ass-name" if record.get("name") else "ass-unnamed",
                              shown))
    if not turns:
        raise SourceError("has no Dialogue lines in an [Events] section", path)
    return turns


def parse_script(text: str) -> list[Turn] | None:
    """A script's turns (``NAME: line``, ``NAME：「line」`` or screenplay layout), or None when it is not one."""
    lines = [(n, pos, line) for n, pos, line in _line_spans(text) if line.strip()]
    if len(lines) < 4:
        return None
    tagged = [t for n, pos, line in lines if (t := _tagged(text, pos, pos + len(line.rstrip()), "script-tag",
                                                           "narration")).speaker]
    if len(tagged) >= 0.4 * len(lines) and len({t.speaker for t in tagged}) >= 2:
        return [_tagged(text, pos + len(line) - len(line.lstrip()), pos + len(line.rstrip()), "script-tag", "narration")
                for n, pos, line in lines]
    names = sum(1 for n, pos, line in lines if _SCREEN_NAME.match(line))
    if names >= 0.15 * len(lines) and names >= 3:
        return _screenplay(text, lines)
    return None


def _screenplay(text: str, lines) -> list[Turn]:
    turns: list[Turn] = []
    speaker = None
    for _, pos, line in lines:
        m = _SCREEN_NAME.match(line)
        if m and len(line.strip().split()) <= 4:
            speaker = m["name"].strip().title()
            continue
        a = pos + len(line) - len(line.lstrip())
        b = pos + len(line.rstrip())
        indented = line.startswith((" ", "\t"))
        if speaker is not None and (indented or not turns or turns[-1].speaker == speaker):
            turns.append(Turn(a, b, speaker, "screenplay", text[a:b]))
        else:
            speaker = None
            turns.append(Turn(a, b, None, "narration", text[a:b]))
    return turns
