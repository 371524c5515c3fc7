"""Lorebooks (SillyTavern "world info"): entries that enter the prompt when their keys appear.

Reads both SillyTavern shapes: a world-info file (``{"entries": {"0": {"key": [...], "keysecondary":
[...], "selectiveLogic": 0, "order": 100, "disable": false, ...}}}``) and a card's ``character_book``
(``{"entries": [{"keys": [...], "secondary_keys": [...], "insertion_order": 100, "enabled": true,
...}]}``). Matching follows SillyTavern: keys are substrings (case-insensitive unless the entry says
otherwise) or ``/regex/flags`` (run by RE2, in linear time: ``lore_keys``); a selective entry also checks
its secondary keys with AND ANY, AND ALL, NOT ANY or NOT ALL; constant entries always fire; the scan covers
the newest ``scan_depth`` messages; with recursion, fired entries' text is scanned again. ``activate``
returns the entries in SillyTavern's budget order: entries fired by the chat (constant or keyed alike)
before those fired by recursion, then higher ``insertion_order`` first, then higher ``priority`` (the V2
spec: lower priority is discarded first). The packer fills the lore share in that order and stops at the
first entry that does not fit, as SillyTavern does; the kept entries enter the prompt by insertion order
(lowest first).

A turn's scan goes through an index of the book's keys (``lore_index``), so a book of 200,000 entries costs
milliseconds, and it has a time budget: keys not reached within it, and patterns RE2 refuses, are skipped
with a warning naming the entry.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..config import LORE_SCAN_BUDGET_S
from ..errors import InvalidCharacter
from ..options import strict
from .lore_index import LoreIndex, ScanReport
from .lore_keys import Literal, literal_in, parse_key, pattern_in

DEFAULT_SCAN_DEPTH = 2  # messages scanned, newest first: the user's message and the reply before it
MAX_RECURSION = 3  # passes over fired entries' content when recursion is on
LOGIC = {0: "and_any", 1: "not_all", 2: "not_any", 3: "and_all"}  # SillyTavern's selectiveLogic numbers


@dataclass
class LoreEntry:
    """One lorebook entry."""

    id: str
    content: str
    keys: list[str] = field(default_factory=list)
    secondary_keys: list[str] = field(default_factory=list)
    selective: bool = False
    logic: str = "and_any"  # and_any | and_all | not_any | not_all
    constant: bool = False
    enabled: bool = True
    insertion_order: int = 100
    priority: int = 0
    case_sensitive: bool = False
    whole_words: bool = False
    scan_depth: int | None = None  # overrides the book's
    prevent_recursion: bool = False  # its content does not trigger other entries
    exclude_recursion: bool = False  # it cannot be triggered by other entries' content
    name: str = ""
    use_regex: bool = False  # V3: every key is a regular expression (``/…/flags`` keys always are)

    def _match_one(self, key: str, text: str) -> bool:
        parsed = parse_key(key, use_regex=self.use_regex, case_sensitive=self.case_sensitive,
                           whole_words=self.whole_words)
        if parsed is None:
            return False
        if isinstance(parsed, Literal):
            return literal_in(parsed, text)
        return pattern_in(parsed, text.encode("utf-8", "surrogatepass"))  # the V3 spec: invalid is no match

    def match(self, text: str) -> str | None:
        """The key that fires this entry on ``text`` (``None`` if it does not fire), entry by entry; a book's
        ``activate`` gives the same answers through its index."""
        primary = next((k for k in self.keys if self._match_one(k, text)), None)
        if primary is None:
            return None
        secondary = [k for k in self.secondary_keys if k.strip()]
        if not self.selective or not secondary:
            return primary
        hits = [self._match_one(k, text) for k in secondary]
        ok = {"and_any": any(hits), "and_all": all(hits), "not_any": not any(hits),
              "not_all": not all(hits)}.get(self.logic, any(hits))
        return primary if ok else None

    def to_character_book(self) -> dict[str, Any]:
        """The entry in a card's ``character_book`` shape."""
        logic = {v: k for k, v in LOGIC.items()}[self.logic]
        return {"id": _int(self.id, 0), "keys": list(self.keys), "secondary_keys": list(self.secondary_keys),
                "content": self.content, "comment": self.name, "name": self.name, "enabled": self.enabled,
                "constant": self.constant, "selective": self.selective, "insertion_order": self.insertion_order,
                "priority": self.priority, "case_sensitive": self.case_sensitive, "use_regex": self.use_regex,
                "extensions": {"selectiveLogic": logic, "match_whole_words": self.whole_words,
                               "scan_depth": self.scan_depth, "prevent_recursion": self.prevent_recursion,
                               "exclude_recursion": self.exclude_recursion}}


@dataclass
class Activation:
    """An entry that fired, and the key (or ``"constant"``/``"recursion"`` origin) that fired it."""

    entry: LoreEntry
    key: str
    recursive: bool = False


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _keys(value: Any) -> list[str]:
    if isinstance(value, str):
        return [k.strip() for k in value.split(",") if k.strip()]
    if isinstance(value, list):
        return [k for k in value if isinstance(k, str) and k.strip()]
    return []


def _logic(value: Any) -> str:
    if isinstance(value, str) and value.lower() in LOGIC.values():
        return value.lower()
    return LOGIC.get(_int(value, 0), "and_any")


def _entry(raw: dict[str, Any], fallback_id: str) -> LoreEntry:
    ext = raw.get("extensions") if isinstance(raw.get("extensions"), dict) else {}
    get = lambda *names, default=None: next((src[n] for n in names for src in (raw, ext)  # noqa: E731
                                             if src.get(n) is not None), default)
    enabled = get("enabled", default=None)
    if enabled is None:
        enabled = not bool(get("disable", default=False))
    depth = get("scan_depth", "scanDepth")
    return LoreEntry(
        id=str(get("uid", "id", default=fallback_id)),
        content=str(raw.get("content") or ""),
        keys=_keys(get("keys", "key", default=[])),
        secondary_keys=_keys(get("secondary_keys", "keysecondary", default=[])),
        selective=bool(get("selective", default=False)),
        logic=_logic(get("selectiveLogic", "selective_logic", default=0)),
        constant=bool(get("constant", default=False)),
        enabled=bool(enabled),
        insertion_order=_int(get("insertion_order", "order", default=100), 100),
        priority=_int(get("priority", default=0), 0),
        case_sensitive=bool(get("case_sensitive", "caseSensitive", default=False)),
        whole_words=bool(get("match_whole_words", "matchWholeWords", default=False)),
        scan_depth=_int(depth, 0) if depth is not None else None,
        prevent_recursion=bool(get("prevent_recursion", "preventRecursion", default=False)),
        exclude_recursion=bool(get("exclude_recursion", "excludeRecursion", default=False)),
        name=str(get("name", "comment", default="") or ""),
        use_regex=get("use_regex", "useRegex", default=False) is True,
    )


@strict
@dataclass
class Lorebook:
    """A set of entries plus the book's scan depth, recursion switch and own token budget."""

    entries: list[LoreEntry] = field(default_factory=list)
    scan_depth: int = DEFAULT_SCAN_DEPTH
    recursive: bool = False
    token_budget: int | None = None
    name: str = ""
    _index: LoreIndex | None = field(default=None, init=False, repr=False, compare=False)
    _warned: set = field(default_factory=set, init=False, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Any, source: object = None) -> "Lorebook":
        """Parse a world-info file or a ``character_book`` object."""
        if not isinstance(data, dict) or not isinstance(data.get("entries"), (dict, list)):
            raise InvalidCharacter("a lorebook needs an 'entries' list or object", path=source)
        raw = data["entries"]
        items = list(raw.items()) if isinstance(raw, dict) else [(str(i), e) for i, e in enumerate(raw)]
        entries = [_entry(e, k) for k, e in items if isinstance(e, dict)]
        budget = data.get("token_budget")
        return cls(entries, _int(data.get("scan_depth"), DEFAULT_SCAN_DEPTH),
                   bool(data.get("recursive_scanning", False)), _int(budget, 0) or None, str(data.get("name") or ""))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Lorebook":
        """Read a lorebook JSON file."""
        path = Path(path).expanduser()
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidCharacter(f"cannot read lorebook: {exc}", path=path) from None
        except RecursionError:
            raise InvalidCharacter("cannot read lorebook: the JSON is nested too deeply", path=path) from None
        return cls.from_dict(data, path)

    def __add__(self, other: "Lorebook") -> "Lorebook":
        budgets = [b for b in (self.token_budget, other.token_budget) if b]
        return Lorebook(self.entries + other.entries, max(self.scan_depth, other.scan_depth),
                        self.recursive or other.recursive, min(budgets) if budgets else None, self.name or other.name)

    def to_character_book(self) -> dict[str, Any]:
        """The book in a card's ``character_book`` shape."""
        book: dict[str, Any] = {"name": self.name, "scan_depth": self.scan_depth,
                                "recursive_scanning": self.recursive, "extensions": {},
                                "entries": [e.to_character_book() for e in self.entries]}
        if self.token_budget:
            book["token_budget"] = self.token_budget
        return book

    def index(self) -> LoreIndex:
        """The book's compiled keys (built on first use; rebuilt when ``entries`` is replaced or grows or
        shrinks; after changing an entry in place, call ``reindex``)."""
        if self._index is None or self._index.source is not self.entries or self._index.size != len(self.entries):
            self.reindex()
        return self._index  # type: ignore[return-value]

    def reindex(self) -> None:
        """Compile the keys again (after entries were changed in place); warns about patterns it skips."""
        self._index = LoreIndex(self.entries)
        for line in self._index.refused:
            self._warn(line)

    def scan(self, messages: Sequence[str], *, recursive: bool | None = None,
             budget_s: float | None = LORE_SCAN_BUDGET_S) -> tuple[list[Activation], ScanReport]:
        """Entries fired by the newest messages (``messages`` oldest first), in budget order, and what the scan
        skipped (``budget_s``: the whole scan's time budget; ``None``: no limit)."""
        recursive = self.recursive if recursive is None else recursive
        index = self.index()
        found, report = index.scan(messages, self.scan_depth, recursive, MAX_RECURSION, budget_s)
        fired = [(i, Activation(self.entries[i], key, recursive=rec)) for i, key, rec in found]
        fired.sort(key=lambda p: (p[1].recursive, -p[1].entry.insertion_order, -p[1].entry.priority, p[0]))
        return [a for _, a in fired], report

    def activate(self, messages: Sequence[str], *, recursive: bool | None = None,
                 budget_s: float | None = LORE_SCAN_BUDGET_S) -> list[Activation]:
        """Entries fired by the newest messages (``messages`` oldest first), in budget order; what the time
        budget cut short is warned about, once per book and entry."""
        fired, report = self.scan(messages, recursive=recursive, budget_s=budget_s)
        if report.over_budget:
            self._warn(f"the scan ran past its {budget_s * 1000:.0f} ms budget "
                       f"({report.elapsed_s * 1000:.0f} ms) and skipped: {'; '.join(report.skipped[:5])}"
                       + (f" and {len(report.skipped) - 5} more" if len(report.skipped) > 5 else ""),
                       "; ".join(report.skipped))
        return fired

    def _warn(self, message: str, condition: str | None = None) -> None:
        condition = condition or message
        if condition in self._warned:
            return
        self._warned.add(condition)
        book = f"lorebook {self.name!r}" if self.name else "lorebook"
        warnings.warn(f"{book}: {message}", RuntimeWarning, stacklevel=3)


def load_lorebooks(paths: Iterable[str | os.PathLike | Lorebook | None]) -> Lorebook | None:
    """Merge lorebooks (files or objects); ``None`` when there are none."""
    books = [p if isinstance(p, Lorebook) else Lorebook.load(p) for p in paths if p is not None]
    if not books:
        return None
    merged = books[0]
    for b in books[1:]:
        merged = merged + b
    return merged
