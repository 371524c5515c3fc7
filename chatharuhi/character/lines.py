"""Scene text parsed into lines: ``名字:「台词」`` and ``名字：「台词」``, text after the closing bracket (a stage
direction), ChatHaruhi's stage direction before the quote (``名字:(动作)「台词」``), a quote whose closing bracket
was lost at the end of the line, narration lines without brackets (``旁白:…``), and lines in no known format (kept
as narration and counted)."""

from __future__ import annotations

import re

from ..config import DEFAULT_NARRATORS, MAX_SPEAKER_CHARS
from ..types import Line, Scene

_NAME = rf"(?P<speaker>[^:：「」\n]{{0,{MAX_SPEAKER_CHARS}}}?)\s*[:：]\s*"
_SPEECH = re.compile(rf"^{_NAME}「(?P<text>.*)」(?P<action>[^」]*)$")
# ChatHaruhi's own data puts the stage direction before the quote: 春日:(成功打出好球上了一垒)「他投的球…」
_ACTED = re.compile(rf"^{_NAME}(?P<action>[(（][^()（）「」]{{1,200}}[)）])\s*「(?P<text>.*?)」?(?P<after>[^」]*)$")
# ASR-made lines often lose the closing bracket at the end of the line: 春日:「有希呢
_OPEN = re.compile(rf"^{_NAME}「(?P<text>[^」]*)$")
_LABELLED = re.compile(rf"^(?P<speaker>[^:：「」\n]{{1,{MAX_SPEAKER_CHARS}}}?)\s*[:：]\s*(?P<text>[^「].*)$")


def parse_line(raw: str, lineno: int = 0, narrators: frozenset[str] = frozenset(DEFAULT_NARRATORS)) -> Line | None:
    """Parse one scene line; ``None`` for a blank line."""
    text = raw.strip().lstrip("\ufeff")
    if not text:
        return None
    m = _SPEECH.match(text)
    if m:
        speaker = m["speaker"].strip()
        kind = "narration" if speaker in narrators else "speech"
        return Line(kind, m["text"].strip(), speaker, m["action"].strip(), lineno)
    m = _ACTED.match(text) or _OPEN.match(text)
    if m and m["speaker"].strip() and m["text"].strip():
        speaker = m["speaker"].strip()
        kind = "narration" if speaker in narrators else "speech"
        parts = (m.groupdict().get("action"), m.groupdict().get("after"))
        action = " ".join(p.strip() for p in parts if p and p.strip())
        return Line(kind, m["text"].strip(), speaker, action, lineno)
    m = _LABELLED.match(text)
    if m and m["speaker"].strip() in narrators:
        return Line("narration", m["text"].strip(), m["speaker"].strip(), "", lineno)
    return Line("other", text, "", "", lineno)


def parse_scene(scene_id: str, text: str, narrators: frozenset[str] = frozenset(DEFAULT_NARRATORS)) -> Scene:
    """Parse a scene's text into lines, keeping the text (minus surrounding blank lines)."""
    lines = tuple(
        line for n, raw in enumerate(text.split("\n"), start=1) if (line := parse_line(raw, n, narrators)) is not None
    )
    return Scene(id=scene_id, text=text.strip(), lines=lines)
