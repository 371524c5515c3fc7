"""The lorebook's index: which entries a turn fires, found in time linear in the text, not by a loop over entries.

Every literal key of the book goes into one Aho-Corasick automaton (two: the case-folded keys, scanned in the
case-folded text, and the case-sensitive ones), so one pass over the text finds every key that occurs, and
only the entries holding a found key (plus the constant ones and those with regular-expression keys) are
looked at. Regular-expression keys run on RE2 (``lore_keys``). The whole scan of a turn has a time budget; keys
not reached within it are skipped and the caller is told which, as are patterns RE2 refuses.

The result is the one ``LoreEntry.match`` gives entry by entry (a test checks the two agree): an entry's
window is the newest ``scan_depth`` messages joined by newlines, and a key found in the whole text is in the
window when it starts at or after the window's start.
"""

from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Sequence

from ..config import LORE_MAX_PATTERNS, LORE_RECURSION_MAX_CHARS
from .lore_keys import Key, Literal, Pattern, at_word_edges, compile_pattern, parse_key

if TYPE_CHECKING:
    from .lorebook import LoreEntry

_CHECK_EVERY = 1024  # matches or entries between two looks at the clock
_MAX_LINES = 20  # skipped entries a report names
_ALL = 1 << 62  # "every message": the window of a recursion pass, or a depth past the history


@dataclass
class ScanReport:
    """What a scan could not do: entries whose keys were skipped, and why (each line names the entry)."""

    skipped: list[str] = field(default_factory=list)
    over_budget: bool = False
    elapsed_s: float = 0.0


class _Deadline:
    def __init__(self, budget_s: float | None):
        self.start = time.perf_counter()
        self.budget_s = budget_s

    def over(self) -> bool:
        return self.budget_s is not None and time.perf_counter() - self.start > self.budget_s


def describe(entry: "LoreEntry") -> str:
    """How a warning names an entry: its id and, if it has one, its name."""
    return f"entry {entry.id}" + (f" ({entry.name!r})" if entry.name else "")


class _Text:
    """A scanned text: messages joined by newlines, as typed, case-folded and in UTF-8, with the start of the
    window of each depth in all three."""

    def __init__(self, messages: Sequence[str]):
        self.messages = list(messages)
        self.plain = "\n".join(self.messages)
        folded = [m.casefold() for m in self.messages]
        self.folded = "\n".join(folded)
        self._data: bytes | None = None
        n = len(self.messages)
        # _starts[k] = where the window of the newest n - k messages starts
        self._starts_plain = _starts([len(m) for m in self.messages])
        self._starts_folded = _starts([len(m) for m in folded])
        self._starts_bytes: list[int] | None = None
        self.n = n

    def _k(self, depth: int) -> int:
        return max(self.n - depth, 0)

    def empty(self, depth: int) -> bool:
        return self._starts_plain[self._k(depth)] >= len(self.plain)

    def start(self, depth: int, case_sensitive: bool) -> int:
        return (self._starts_plain if case_sensitive else self._starts_folded)[self._k(depth)]

    def data(self, depth: int) -> bytes:
        if self._data is None:
            encoded = [m.encode("utf-8", "surrogatepass") for m in self.messages]
            self._data = b"\n".join(encoded)
            self._starts_bytes = _starts([len(m) for m in encoded])
        return self._data[self._starts_bytes[self._k(depth)]:]  # type: ignore[index]


def _starts(lengths: list[int]) -> list[int]:
    out, pos = [], 0
    for length in lengths:
        out.append(pos)
        pos += length + 1
    return out + [pos]


@contextmanager
def _collector_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class LoreIndex:
    """The keys of a book's live entries, compiled once; ``scan`` answers a turn."""

    def __init__(self, entries: Sequence["LoreEntry"]):
        self.source, self.size = entries, len(entries)  # what it was built from (the book checks it is current)
        self.entries = list(entries)
        self.live = [i for i, e in enumerate(self.entries) if e.enabled and e.content.strip()]
        self.constant = [i for i in self.live if self.entries[i].constant]
        self.keys: list[Key] = []
        self.owner: list[int] = []  # key id -> the first entry that holds it (warnings name it)
        self.primary: dict[int, list[tuple[int, str]]] = {}  # entry -> (key id, the key as written)
        self.secondary: dict[int, list[int]] = {}
        self.holders: dict[int, list[int]] = {}  # literal key id -> entries it is a primary key of
        self.with_patterns: list[int] = []  # entries with a regular-expression primary key, in book order
        self.refused: list[str] = []  # one line per skipped pattern, naming the entry
        self.usable: set[int] = set()  # pattern key ids RE2 compiled
        with _collector_paused():  # a big book makes millions of small objects and no cycle: 2.5x faster
            self._collect()
            self._compile_patterns()
            self._automata = self._build_automata()

    def _collect(self) -> None:
        ids: dict[Key, int] = {}
        seen: dict[tuple, int | None] = {}  # the key as written, with its entry's switches -> key id

        def key_id(raw: str, i: int, e: "LoreEntry") -> int | None:
            written = (raw, e.use_regex, e.case_sensitive, e.whole_words)
            if written in seen:
                return seen[written]
            key = parse_key(raw, use_regex=e.use_regex, case_sensitive=e.case_sensitive, whole_words=e.whole_words)
            if key is not None and key not in ids:
                ids[key] = len(self.keys)
                self.keys.append(key)
                self.owner.append(i)
            seen[written] = kid = None if key is None else ids[key]
            return kid

        for i in self.live:
            e = self.entries[i]
            if e.constant:
                continue
            primary = self.primary[i] = [(kid, raw) for raw in e.keys if (kid := key_id(raw, i, e)) is not None]
            self.secondary[i] = [kid for k in e.secondary_keys if (kid := key_id(k, i, e)) is not None]
            pattern = False
            for kid, _ in primary:
                if isinstance(self.keys[kid], Literal):
                    self.holders.setdefault(kid, []).append(i)
                else:
                    pattern = True
            if pattern:
                self.with_patterns.append(i)

    def _compile_patterns(self) -> None:
        patterns = 0
        for kid, key in enumerate(self.keys):
            if not isinstance(key, Pattern):
                continue
            patterns += 1
            regex, reason = compile_pattern(key) if patterns <= LORE_MAX_PATTERNS else (
                None, f"the book has more than {LORE_MAX_PATTERNS:,} regular-expression keys")
            if regex is None:
                self.refused.append(f"{self._owner(kid)}: the key /{key.source[:60]}/ is skipped: {reason}")
            else:
                self.usable.add(kid)

    def _build_automata(self) -> dict:
        import ahocorasick

        needles: dict[bool, dict[str, list[int]]] = {False: {}, True: {}}
        for kid, key in enumerate(self.keys):
            if isinstance(key, Literal):
                needles[key.case_sensitive].setdefault(key.needle, []).append(kid)
        automata = {}
        for case_sensitive, table in needles.items():
            if table:
                auto = ahocorasick.Automaton()
                for needle, kids in table.items():
                    auto.add_word(needle, (len(needle), tuple(kids)))
                auto.make_automaton()
                automata[case_sensitive] = auto
        return automata

    def _owner(self, kid: int) -> str:
        return describe(self.entries[self.owner[kid]])

    # -- one turn ------------------------------------------------------------------------------------
    def scan(self, messages: Sequence[str], scan_depth: int, recursive: bool, max_recursion: int,
             budget_s: float | None) -> tuple[list[tuple[int, str, bool]], ScanReport]:
        """``(entry position, key or "constant", fired by recursion)`` of each entry that fires, in firing
        order, and what was skipped."""
        report, clock = ScanReport(), _Deadline(budget_s)
        fired: dict[int, tuple[str, bool]] = {i: ("constant", False) for i in self.constant}
        text = _Text(messages)
        self._fire(text, lambda i: self._depth(i, scan_depth), fired, False, clock, report)
        fired = dict(sorted(fired.items()))  # book order, constant or keyed alike: the recursion text's order
        for _ in range(max_recursion if recursive else 0):
            contents, size = [], 0
            for i in fired:
                e = self.entries[i]
                if not e.prevent_recursion and size < LORE_RECURSION_MAX_CHARS:
                    contents.append(e.content[:LORE_RECURSION_MAX_CHARS - size])
                    size += len(contents[-1]) + 1
            before = len(fired)
            self._fire(_Text(["\n".join(contents)]), lambda i: _ALL, fired, True, clock, report)
            if len(fired) == before:
                break
        report.elapsed_s = time.perf_counter() - clock.start
        return [(i, key, rec) for i, (key, rec) in fired.items()], report

    def _depth(self, i: int, book_depth: int) -> int:
        d = self.entries[i].scan_depth
        return book_depth if d is None else d

    def _fire(self, text: _Text, depth_of, fired: dict, recursion: bool, clock: _Deadline,
              report: ScanReport) -> None:
        last = self._literals(text, clock, report)
        candidates = {i for kid in last for i in self.holders.get(kid, ())}
        candidates.update(self.with_patterns)
        memo: dict[tuple[int, int], bool] = {}

        def has(kid: int, depth: int) -> bool:
            if depth <= 0 or (not recursion and text.empty(depth)):  # an empty window fires nothing
                return False
            key = self.keys[kid]
            if isinstance(key, Literal):
                return last.get(kid, -1) >= text.start(depth, key.case_sensitive)
            if kid not in self.usable:
                return False
            if (kid, depth) not in memo:
                if clock.over():
                    self._over(report, f"{self._owner(kid)}: the key /{key.source[:60]}/ was not tried")
                    memo[(kid, depth)] = False
                else:
                    regex, _ = compile_pattern(key)
                    memo[(kid, depth)] = regex.search(text.data(depth)) is not None
            return memo[(kid, depth)]

        new = {}
        for n, i in enumerate(sorted(candidates)):
            e = self.entries[i]
            if i in fired or (recursion and e.exclude_recursion):
                continue
            if n % _CHECK_EVERY == _CHECK_EVERY - 1 and clock.over():
                self._over(report, "some entries holding a key that occurs were not checked")
                break
            depth = depth_of(i)
            key = next((raw for kid, raw in self.primary.get(i, ()) if has(kid, depth)), None)
            if key is None:
                continue
            secondary = self.secondary.get(i, [])
            if e.selective and secondary:
                hits = [has(kid, depth) for kid in secondary]
                ok = {"and_any": any(hits), "and_all": all(hits), "not_any": not any(hits),
                      "not_all": not all(hits)}.get(e.logic, any(hits))
                if not ok:
                    continue
            new[i] = (key, recursion)
        fired.update(sorted(new.items()))

    def _literals(self, text: _Text, clock: _Deadline, report: ScanReport) -> dict[int, int]:
        """Literal key id -> where its last occurrence (at word edges, for whole-word keys) starts."""
        last: dict[int, int] = {}
        for case_sensitive, auto in self._automata.items():
            haystack = text.plain if case_sensitive else text.folded
            for n, (end, (length, kids)) in enumerate(auto.iter(haystack)):
                if n % _CHECK_EVERY == _CHECK_EVERY - 1 and clock.over():
                    self._over(report, "the scan for literal keys stopped before the end of the text")
                    break
                start = end - length + 1
                edges = None
                for kid in kids:
                    if self.keys[kid].whole:  # type: ignore[union-attr]
                        edges = at_word_edges(haystack, start, end + 1) if edges is None else edges
                        if not edges:
                            continue
                    last[kid] = start
        return last

    @staticmethod
    def _over(report: ScanReport, line: str) -> None:
        report.over_budget = True
        if line not in report.skipped and len(report.skipped) < _MAX_LINES:
            report.skipped.append(line)
