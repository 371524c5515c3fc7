"""Keep the character's own words: strip its speaker tag and brackets, cut where another speaker starts.

Models asked to answer as ``春日:「……」`` often go on to write the user's next line (``阿虚:「……」``)
or narration. ``ReplyFilter`` works on a stream: it emits text as soon as it is certain to stay,
holds back what may still change (an undecided line start, a possible closing bracket, trailing
space), and reports ``stopped`` when another speaker begins, so the caller can close the stream.

Two kinds of stray line are dropped, both seen in real replies of small models: a line spoken by
anyone but the character after it has spoken (``Mom:👌👍``; the reply ends there), and
meta-commentary about the reply (``Here's what's changed since the original scene: …``,
``(Note: …)``, ``以下是……``): dropped when it opens the reply, the end of the reply after it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..config import MAX_SPEAKER_CHARS

MAX_TAG_CHARS = 20  # a streamed line with no colon after this many characters cannot start with a speaker tag
_NOT_IN_NAME = re.compile(r"[，。！？!?…,.；;、\n]")  # punctuation before any colon: the line is not a tag
_TAG = re.compile(rf"^\s*(?P<name>[^:：「」\n]{{0,{MAX_SPEAKER_CHARS}}}?)\s*[:：]\s*(?P<open>「?)")
_OPEN, _CLOSE = "「", "」"
MAX_NAME_WORDS = 3  # "Mrs Hudson", "Inspector G. Lestrade": longer heads before a colon are prose
# openers of meta-commentary (compared case-insensitively): specific enough not to be the character's speech
META_OPENERS = (
    "here's what's changed", "here’s what’s changed", "here's what changed", "here is what changed",
    "here's the revised", "here is the revised", "here's the updated", "here is the updated",
    "here's my response", "here is my response", "here's the response", "here is the response",
    "what's changed", "changes made", "note:", "note：", "notes:", "(note", "（note", "[note", "p.s.:",
    "as an ai", "as a language model", "i hope this helps", "let me know if", "以下是", "注：", "注:", "(注",
    "（注", "备注：", "备注:", "修改说明", "说明：", "改动：",
)


def _is_meta(line: str) -> bool:
    return line.strip().casefold().startswith(META_OPENERS)


def _maybe_meta(line: str) -> bool:
    """Whether a line still being streamed may yet turn out to be meta-commentary."""
    head = line.strip().casefold()
    return bool(head) and any(o.startswith(head) and len(head) < len(o) for o in META_OPENERS)


_BEFORE_A_TAG = "。！？.!?…」』\"”)）"  # what ends a sentence before another speaker's tag in mid-line


def _mid_line_tag(line: str, others: set[str]) -> int | None:
    """Where a known other speaker's tag (``Lestrade:``) starts after a sentence end in mid-line, or None."""
    best = None
    for name in others:
        for m in re.finditer(re.escape(name) + r"\s*[:：]", line, flags=re.IGNORECASE):
            before = line[: m.start()].rstrip()
            if before and before[-1] in _BEFORE_A_TAG and (best is None or len(before) < best):
                best = len(before)
    return best


def _held_tail(line: str, others: set[str]) -> int | None:
    """Where a streamed line's unfinished tail may still become another speaker's tag (``… Lestr``), or None."""
    cut = max(line.rfind(c) for c in _BEFORE_A_TAG)
    if cut < 0:
        return None
    tail = line[cut + 1 :].lstrip().casefold()
    if tail and any((n + ":").startswith(tail) or (n + "：").startswith(tail) for n in others):
        return cut + 1
    return None


def _looks_like_name(name: str) -> bool:
    """Whether the text before a colon reads as a speaker's name (``Mom``, ``Mrs Hudson``, ``妈妈``)."""
    return (0 < len(name) <= MAX_TAG_CHARS and any(c.isalpha() for c in name)
            and len(name.split()) <= MAX_NAME_WORDS)


class ReplyFilter:
    """Streaming post-processor for one reply."""

    def __init__(self, own_names: Iterable[str], other_names: Iterable[str] = (), skip_names: Iterable[str] = ()):
        self.own = {n.strip().casefold() for n in own_names if n.strip()}
        self.others = {n.strip().casefold() for n in other_names if n.strip()} - self.own
        self.skip = {n.strip().casefold() for n in skip_names if n.strip()} - self.own  # narration lines
        self._raw = ""
        self._emitted = ""
        self.stopped = False

    def _line(self, line: str, complete: bool, first: bool = False) -> tuple[str | None, bool | str]:
        """Clean one line: (text or None while undecided, whether another speaker starts here, or "meta")."""
        m = _TAG.match(line)
        decided = complete or (m is not None and (m["open"] or len(line) > m.end())) or _OPEN in line
        head = re.split("[:：]", line, maxsplit=1)[0]
        decided = decided or len(head) > MAX_TAG_CHARS or bool(_NOT_IN_NAME.search(head))
        if not decided or (not complete and _maybe_meta(line)):
            return None, False
        if _is_meta(line):
            return "", "meta"
        quoted = False
        if m is not None:
            name = m["name"].strip().casefold()
            if name in self.own:
                line, quoted = line[m.end() :], bool(m["open"])
            elif name in self.skip:
                return ("" if complete else None), False
            elif m["open"] or name in self.others or (not first and _looks_like_name(name)):
                return "", True
        if not quoted and line.lstrip().startswith(_OPEN):
            line, quoted = line.lstrip()[1:], True
        if self.others:  # "…so beautiful. Lestrade:It is…": the reply ends where another speaker starts
            at = _mid_line_tag(line, self.others)
            if at is not None:
                return self._unquote(line[:at], quoted, True), "cut"
            held = None if complete else _held_tail(line, self.others)
            if held is not None:
                line = line[:held]
        return self._unquote(line, quoted, complete), False

    @staticmethod
    def _unquote(line: str, quoted: bool, complete: bool) -> str:
        """The line without its closing bracket (a streamed line: up to where that bracket may be)."""
        if quoted:
            close = line.rfind(_CLOSE)
            if close >= 0:
                line = line[:close] + line[close + 1 :] if complete else line[:close]
        return line

    def _clean(self, final: bool) -> str:
        lines = self._raw.lstrip().split("\n")
        out: list[str] = []
        for i, line in enumerate(lines):
            complete = final or i < len(lines) - 1
            text, stop = self._line(line, complete, first=not any(out))
            if stop == "meta":  # commentary about the reply: skipped before it, the end of it after
                if any(out):
                    self.stopped = True
                    break
                continue
            if stop == "cut":  # another speaker starts in mid-line: keep what came before, end there
                out.append(text.strip())
                self.stopped = True
                break
            if stop and not any(out):  # a reply that opens as someone else is kept whole, not emptied
                if not complete:
                    break
                text, stop = line, False
            if stop:
                self.stopped = True
                break
            if text is None:
                break
            if complete and not text.strip() and (not out or not out[-1]):
                continue  # no blank lines at the start, none doubled
            out.append(text.strip() if complete else text.lstrip())
        cleaned = "\n".join(out)
        return cleaned.strip() if final or self.stopped else cleaned.rstrip()

    def feed(self, chunk: str) -> str:
        """Add a chunk of the raw reply; return the new text that is safe to show."""
        if self.stopped:
            return ""
        self._raw += chunk
        return self._advance(self._clean(final=False))

    def finish(self) -> str:
        """The raw reply is complete: return the rest of the clean text."""
        delta = "" if self.stopped else self._advance(self._clean(final=True))
        if not self._emitted and self._raw.strip():  # nothing survived: better the raw reply than none
            delta = self._emitted = self._raw.strip()
        return delta

    def _advance(self, cleaned: str) -> str:
        if not cleaned.startswith(self._emitted):  # cannot happen by construction; never re-emit
            return ""
        delta, self._emitted = cleaned[len(self._emitted) :], cleaned
        return delta

    @property
    def text(self) -> str:
        """The clean text emitted so far."""
        return self._emitted


class PassThrough:
    """The same interface as ``ReplyFilter`` with post-processing off: every chunk is kept as it is."""

    stopped = False

    def __init__(self) -> None:
        self._parts: list[str] = []

    def feed(self, chunk: str) -> str:
        """Keep the chunk and return it."""
        self._parts.append(chunk)
        return chunk

    def finish(self) -> str:
        """Nothing is held back."""
        return ""

    @property
    def text(self) -> str:
        """Everything fed so far."""
        return "".join(self._parts)


def clean_reply(
    raw: str, own_names: Iterable[str], other_names: Iterable[str] = (), skip_names: Iterable[str] = ()
) -> str:
    """Post-process a whole reply at once."""
    f = ReplyFilter(own_names, other_names, skip_names)
    f.feed(raw)
    f.finish()
    return f.text


_SENTENCE_END = "。！？!?…」』\"”)）~～"
_CLAUSE_END = "，、；;：:,"
CUT_KEEP_SHARE = 0.5  # a cut reply is trimmed back to a sentence end only when that keeps at least half of it


def trim_cut_reply(text: str) -> str:
    """A reply cut at the length limit, ended cleanly: at the last sentence end when that keeps at least half of
    it, else at the last clause end or word boundary, never mid-word ("" stays "")."""
    text = text.rstrip()
    if not text or text[-1] in _SENTENCE_END or (text[-1] == "." and not text.endswith("..")):
        return text
    floor = int(len(text) * CUT_KEEP_SHARE)
    ends = [i for i, c in enumerate(text) if c in _SENTENCE_END or (c == "." and text[i + 1:i + 2] in (" ", ""))]
    if ends and ends[-1] + 1 >= floor:
        return text[: ends[-1] + 1]
    for i in range(len(text) - 1, floor - 1, -1):
        if text[i] in _CLAUSE_END:
            return text[:i].rstrip()
        if text[i].isspace():
            return text[:i].rstrip()
    return text  # one long word (or CJK with no punctuation near the end): nothing better to cut at
