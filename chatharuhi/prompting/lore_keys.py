"""Lorebook keys, as SillyTavern reads them: a literal (a substring, case-insensitive unless the entry says so,
whole words for ASCII keys if asked) or a regular expression (``/pattern/flags``, or every key of a V3
``use_regex`` entry).

A card chooses its patterns, and Python's ``re`` backtracks: one nested quantifier froze the whole process for
as long as the message was long (holding the GIL). Patterns run on RE2 instead, whose matching time is linear
in the text, within a memory cap; a pattern RE2 refuses (back-references, look-arounds) or one too long is
never a match, and the reason names it, so the caller can warn once.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from ..config import LORE_PATTERN_MAX_CHARS, LORE_PATTERN_MAX_MEM

_FLAGS = {"i": "i", "m": "m", "s": "s"}  # JavaScript's flags that change a match; g, u, y, d do not here


class Literal(NamedTuple):  # tuples: a book of 200,000 entries hashes its keys fast
    """A literal key: matched in the case-folded text unless ``case_sensitive``; ``whole`` asks for word edges."""

    needle: str
    case_sensitive: bool
    whole: bool


class Pattern(NamedTuple):
    """A regular-expression key and the JavaScript flags it carries."""

    source: str
    flags: str


Key = Literal | Pattern


def parse_key(key: str, *, use_regex: bool = False, case_sensitive: bool = False,
              whole_words: bool = False) -> Key | None:
    """The key as written in a card (``None`` for an empty one)."""
    key = key.strip()
    if not key:
        return None
    slash = key.rfind("/")
    letters = key[slash + 1:]
    if key.startswith("/") and slash >= 2 and all("a" <= c <= "z" for c in letters):  # SillyTavern's /pattern/flags
        return Pattern(key[1:slash], "".join(sorted({_FLAGS[c] for c in letters if c in _FLAGS})))
    if use_regex:  # V3: every key is a pattern, case-insensitive unless the entry is case-sensitive
        return Pattern(key, "" if case_sensitive else "i")
    needle = key if case_sensitive else key.casefold()
    return Literal(needle, case_sensitive, whole_words and key.isascii())


@functools.lru_cache(maxsize=4096)
def compile_pattern(p: Pattern):
    """``(regex, "")`` compiled by RE2 for UTF-8 bytes, or ``(None, reason)`` when it cannot be used."""
    import re2

    if len(p.source) > LORE_PATTERN_MAX_CHARS:
        return None, f"the pattern is {len(p.source):,} characters; the limit is {LORE_PATTERN_MAX_CHARS:,}"
    options = re2.Options()
    options.max_mem = LORE_PATTERN_MAX_MEM
    options.log_errors = False
    prefix = f"(?{p.flags})" if p.flags else ""
    try:
        return re2.compile((prefix + p.source).encode("utf-8", "surrogatepass"), options), ""
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        return None, f"the pattern is not one a linear-time engine runs ({reason})"
    except (UnicodeError, TypeError, ValueError) as exc:
        return None, f"the pattern cannot be read ({exc})"


def is_word(c: str) -> bool:
    """What ``\\w`` matches (Unicode letters, digits and the underscore)."""
    return c.isalnum() or c == "_"


def at_word_edges(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` is not glued to a word character on either side."""
    return (start == 0 or not is_word(text[start - 1])) and (end >= len(text) or not is_word(text[end]))


def literal_in(key: Literal, text: str, folded: str | None = None) -> bool:
    """Whether a literal key occurs in ``text`` (``folded``: ``text.casefold()``, if the caller has it)."""
    haystack = text if key.case_sensitive else (folded if folded is not None else text.casefold())
    start = haystack.find(key.needle)
    if not key.whole:
        return start >= 0
    while start >= 0:
        if at_word_edges(haystack, start, start + len(key.needle)):
            return True
        start = haystack.find(key.needle, start + 1)
    return False


def pattern_in(p: Pattern, data: bytes) -> bool:
    """Whether a pattern matches UTF-8 ``data`` (a refused pattern never does)."""
    regex, _ = compile_pattern(p)
    return regex is not None and regex.search(data) is not None
