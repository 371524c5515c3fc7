"""The Character Card V2 and V3 specs as data: their fields and types, and ``spec_data`` that makes any
card's ``data`` spec-valid for export (missing required fields filled, wrong types repaired, nothing
unknown destroyed).

V2 (github.com/malfoyslastname/character-card-spec-v2, spec_v2.md): ``data`` holds the six V1 fields
plus ``creator_notes``, ``system_prompt``, ``post_history_instructions`` (strings),
``alternate_greetings``, ``tags`` (string arrays), ``creator``, ``character_version`` (strings),
``extensions`` (an object, default ``{}``) and an optional ``character_book`` whose ``extensions`` and
``entries`` are required, each entry with ``keys``, ``content``, ``extensions``, ``enabled`` and
``insertion_order``. V3 (github.com/kwaroran/character-card-spec-v3, SPEC_V3.md) keeps those and
requires ``group_only_greetings`` (string array) and, per lorebook entry, ``use_regex``; ``assets``,
``nickname``, ``creator_notes_multilingual``, ``source``, ``creation_date`` and ``modification_date``
are optional with fixed types.
"""

from __future__ import annotations

import copy
from typing import Any

V1_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")
V2_STRINGS = (*V1_FIELDS, "creator_notes", "system_prompt", "post_history_instructions", "creator",
              "character_version")
V2_LISTS = ("alternate_greetings", "tags")
V2_FIELDS = (*V2_STRINGS, *V2_LISTS, "extensions")
V3_LISTS = (*V2_LISTS, "group_only_greetings")
V3_OPTIONAL = {"nickname": str, "creator_notes_multilingual": dict, "source": list, "creation_date": (int, float),
               "modification_date": (int, float), "assets": list}
DEFAULT_V3_ASSETS = [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}]
EXTRA_KEY = "chatharuhi_repaired"  # where a value of the wrong type is kept, inside ``extensions``
_BOOK_OPTIONAL = {"name": str, "description": str, "scan_depth": (int, float), "token_budget": (int, float),
                  "recursive_scanning": bool}
_ENTRY_OPTIONAL = {"name": str, "priority": (int, float), "comment": str, "selective": bool,
                   "secondary_keys": list, "constant": bool, "case_sensitive": bool}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fits(value: Any, kind: Any) -> bool:
    """``value`` has the spec's type (a bool is not a number; ``None`` fits nothing)."""
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def _strings(value: Any) -> list[str] | None:
    """A list of strings from a list (non-strings dropped) or a comma-separated string; None otherwise."""
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return None


class _Repairs:
    """Collects values that had to be replaced, so nothing a card carried is lost."""

    def __init__(self) -> None:
        self.kept: dict[str, Any] = {}

    def keep(self, where: str, value: Any) -> None:
        if value is not None:
            self.kept[where] = value


def _entry(raw: Any, i: int, v3: bool, repairs: _Repairs) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        repairs.keep(f"character_book.entries.{i}", raw)
        return None
    e = dict(raw)
    raw_keys = e.get("keys", e.get("key"))
    keys = _strings(raw_keys)
    if keys is None or (isinstance(raw_keys, list) and len(keys) != len(raw_keys)):
        repairs.keep(f"character_book.entries.{i}.keys", raw_keys)
    e["keys"] = keys if keys is not None else []
    e.pop("key", None)
    if not isinstance(e.get("content"), str):
        repairs.keep(f"character_book.entries.{i}.content", e.get("content"))
        e["content"] = "" if e.get("content") is None else str(e.get("content"))
    if not isinstance(e.get("extensions"), dict):
        repairs.keep(f"character_book.entries.{i}.extensions", e.get("extensions"))
        e["extensions"] = {}
    if not isinstance(e.get("enabled"), bool):
        e["enabled"] = not bool(e.get("disable", False)) if e.get("enabled") is None else bool(e["enabled"])
    if not _is_number(e.get("insertion_order")):
        order = e.get("order", e.get("insertion_order"))
        e["insertion_order"] = order if _is_number(order) else 100
    for name, kind in _ENTRY_OPTIONAL.items():
        if name not in e or _fits(e[name], kind):
            continue
        fixed = _strings(e[name]) if kind is list else None
        if fixed is None:
            repairs.keep(f"character_book.entries.{i}.{name}", e.pop(name))
        else:
            e[name] = fixed
    if "id" in e and not (_is_number(e["id"]) or (v3 and isinstance(e["id"], str))):
        ident = e.pop("id")
        if isinstance(ident, str) and ident.strip().lstrip("-").isdigit():
            e["id"] = int(ident)
        else:
            repairs.keep(f"character_book.entries.{i}.id", ident)
    if e.get("position") not in (None, "before_char", "after_char"):
        repairs.keep(f"character_book.entries.{i}.position", e.pop("position"))
    if v3 and not isinstance(e.get("use_regex"), bool):
        # False: V3 would read every key as a bare pattern; SillyTavern-style ``/…/flags`` keys stay as they are
        e["use_regex"] = False
    return e


def _book(raw: Any, v3: bool, repairs: _Repairs) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        repairs.keep("character_book", raw)
        return None
    book = dict(raw)
    if not isinstance(book.get("extensions"), dict):
        repairs.keep("character_book.extensions", book.get("extensions"))
        book["extensions"] = {}
    entries = book.get("entries")
    if isinstance(entries, dict):  # a SillyTavern world-info file's {"0": {...}} shape
        entries = list(entries.values())
    if not isinstance(entries, list):
        repairs.keep("character_book.entries", entries)
        entries = []
    book["entries"] = [e for i, raw_e in enumerate(entries) if (e := _entry(raw_e, i, v3, repairs)) is not None]
    for name, kind in _BOOK_OPTIONAL.items():
        if name in book and not _fits(book[name], kind):
            repairs.keep(f"character_book.{name}", book.pop(name))
    return book


def spec_data(data: dict[str, Any], spec: str) -> dict[str, Any]:
    """``data`` made valid for ``spec`` (``"chara_card_v2"`` or ``"chara_card_v3"``): every required field
    present with its type; a value of the wrong type is repaired and the original kept under
    ``extensions["chatharuhi_repaired"]``; unknown keys stay (the specs forbid destroying them)."""
    v3 = spec == "chara_card_v3"
    out, repairs = copy.deepcopy(data), _Repairs()
    for name in V2_STRINGS:
        value = out.get(name)
        if not isinstance(value, str):
            if value is not None:
                repairs.keep(name, value)
            out[name] = str(value) if _is_number(value) else ""
    for name in V3_LISTS if v3 else V2_LISTS:
        value = out.get(name)
        fixed = _strings(value)
        if fixed is None or (isinstance(value, list) and len(fixed) != len(value)):
            repairs.keep(name, value)
        out[name] = fixed if fixed is not None else []
    if not isinstance(out.get("extensions"), dict):
        repairs.keep("extensions", out.get("extensions"))
        out["extensions"] = {}
    if "character_book" in out:
        book = _book(out["character_book"], v3, repairs)
        if book is None:
            del out["character_book"]
        else:
            out["character_book"] = book
    if v3:
        for name, kind in V3_OPTIONAL.items():
            if name in out and not _fits(out[name], kind):
                repairs.keep(name, out.pop(name))
        if "assets" in out:
            good = [a for a in out["assets"] if isinstance(a, dict) and all(isinstance(a.get(k), str)
                                                                              for k in ("type", "uri", "name", "ext"))]
            if len(good) != len(out["assets"]):
                repairs.keep("assets", out["assets"])
            out["assets"] = good
        out.setdefault("assets", copy.deepcopy(DEFAULT_V3_ASSETS))
    if repairs.kept:
        out["extensions"] = {**out["extensions"], EXTRA_KEY: {**out["extensions"].get(EXTRA_KEY, {}),
                                                              **repairs.kept}}
    return out
