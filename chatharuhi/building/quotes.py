"""Paragraphs and quotations in prose: where each quoted span starts and ends in the decoded text.

English: straight double quotes (a quotation running over several paragraphs opens each one and closes
in the last, as printed books do), curly double quotes, or curly single quotes when a book uses only
those. Chinese: “…”, 「…」 and 『…』. Offsets exclude the quotation marks, so ``text[start:end]`` is the
quotation itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_BLANK = re.compile(r"\n[ \t\u3000]*\n")
# (open, close) pairs; straight quotes open and close with the same mark
_PAIRS = {'"': ('"', '"'), "“": ("“", "”"), "‘": ("‘", "’"), "「": ("「", "」"), "『": ("『", "』")}
MAX_QUOTE_CHARS = 6000  # an unclosed mark does not swallow a chapter: a quotation longer than this is cut


@dataclass(frozen=True)
class Paragraph:
    """One paragraph: its span in the text."""

    index: int
    start: int
    end: int


@dataclass(frozen=True)
class Quotation:
    """A quoted span (marks excluded) inside one paragraph."""

    start: int
    end: int
    paragraph: int
    continues: bool = False  # opened in an earlier paragraph (a speech running over paragraphs)


def split_paragraphs(text: str, language: str) -> list[Paragraph]:
    """Blank-line paragraphs for hard-wrapped English; one paragraph a line otherwise (and for Chinese)."""
    lines = text.count("\n") + 1
    blank_separated = language != "zh" and len(_BLANK.findall(text)) >= 0.05 * lines
    spans: list[tuple[int, int]] = []
    if blank_separated:
        pos = 0
        for m in _BLANK.finditer(text):
            spans.append((pos, m.start()))
            pos = m.end()
        spans.append((pos, len(text)))
    else:
        pos = 0
        for line in text.split("\n"):
            spans.append((pos, pos + len(line)))
            pos += len(line) + 1
    out = []
    for a, b in spans:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if b > a:
            out.append(Paragraph(len(out), a, b))
    return out


def quote_style(text: str, language: str) -> tuple[str, ...]:
    """The opening marks this text uses for speech."""
    if language == "zh":
        return tuple(m for m in ("“", "「", "『", '"') if m in text) or ("“",)
    counts = {m: text.count(m) for m in ('"', "“", "‘")}
    if counts['"'] + counts["“"] == 0 and counts["‘"]:
        return ("‘",)
    return tuple(m for m in ('"', "“") if counts[m]) or ('"',)


def find_quotations(text: str, paragraphs: list[Paragraph], language: str) -> list[Quotation]:
    """Every quotation, in text order."""
    marks = quote_style(text, language)
    straight = '"' in marks
    out: list[Quotation] = []
    carried = False  # a straight-quote speech left open at the end of the last paragraph
    for para in paragraphs:
        carried = _scan(text, para, marks, straight, carried, out)
    return out


def _scan(text: str, para: Paragraph, marks: tuple[str, ...], straight: bool, carried: bool,
          out: list[Quotation]) -> bool:
    """Add the paragraph's quotations; return whether a straight-quote speech stays open after it."""
    i, end = para.start, para.end
    body = text[i:end]
    # A continued speech reopens the paragraph with the same mark; one that does not is narration again.
    if carried and not body.startswith('"'):
        carried = False
    opening = None  # (mark, position of the first quoted character)
    continues = False
    while i < end:
        ch = text[i]
        if opening is None:
            if ch in _PAIRS and ch in marks and not _apostrophe(text, i, ch):
                opening = (ch, i + 1)
                continues = carried and i == para.start
        else:
            mark, start = opening
            if ch == _PAIRS[mark][1] and i > start and not _apostrophe(text, i, ch):
                _add(out, start, i, para.index, continues)
                opening = None
            elif ch == _PAIRS[mark][1] and i == start:  # an empty pair
                opening = None
            elif i - start > MAX_QUOTE_CHARS:
                opening = None
        i += 1
    if opening is not None:
        mark, start = opening
        _add(out, start, end, para.index, continues)
        return straight and mark == '"'
    return False


def _apostrophe(text: str, i: int, ch: str) -> bool:
    """A curly single quote between letters is an apostrophe (don’t), not a mark."""
    if ch not in "‘’":
        return False
    return 0 < i < len(text) - 1 and text[i - 1].isalpha() and text[i + 1].isalpha()


def _add(out: list[Quotation], start: int, end: int, paragraph: int, continues: bool) -> None:
    if end > start:
        out.append(Quotation(start, end, paragraph, continues))
