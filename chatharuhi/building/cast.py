"""The cast: each character's main name, aliases and gender, and finding their mentions in a text.

A cast file has one character a line, its names separated by ``|``, the main name first
(``Sherlock Holmes|Holmes|Mr. Holmes``); ``#`` starts a comment. Short forms a book also uses
(``Poirot`` for ``Hercule Poirot``, ``少平`` for ``孙少平``) are added when no other character shares them;
a form two characters share is kept as an ambiguous mention, resolved by who was named last.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import CastError
from .names import short_forms, title_gender

_EN_PRONOUN_AFTER = re.compile(r"\b(he|him|his|himself|she|her|hers|herself)\b", re.I)
_ZH_PRONOUN_AFTER = re.compile(r"[他她]")
MAX_CAST = 500  # a cast file or a discovered cast larger than this is refused / cut
MAX_NAME_CHARS = 60


@dataclass(frozen=True)
class Member:
    """One character of the cast."""

    name: str  # the main name: what the report and the scenes call them
    aliases: tuple[str, ...] = ()  # other names the user or the discovery gave
    gender: str | None = None  # "m", "f" or None (unknown)
    lines: int = 0  # lines found for them (filled in after attribution)

    @property
    def names(self) -> tuple[str, ...]:
        """The main name and the aliases."""
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class Mention:
    """A name of the cast found in the text; ``who`` holds several indexes when the form is shared."""

    start: int
    end: int
    who: tuple[int, ...]


@dataclass
class Cast:
    """The characters and a matcher for their names."""

    members: list[Member]
    language: str = "en"
    merges: list[str] = field(default_factory=list)  # "Holmes -> Sherlock Holmes": shown so a user can undo one
    _forms: dict[str, tuple[int, ...]] = field(default_factory=dict, repr=False)
    _pattern: re.Pattern | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._build()

    def _build(self) -> None:
        explicit: dict[str, set[int]] = {}
        for i, m in enumerate(self.members):
            for n in m.names:
                explicit.setdefault(n, set()).add(i)
        derived: dict[str, set[int]] = {}
        for i, m in enumerate(self.members):
            for n in m.names:
                for form in short_forms(n, self.language):
                    if form not in explicit:
                        derived.setdefault(form, set()).add(i)
        forms = {k: tuple(sorted(v)) for k, v in {**derived, **explicit}.items()}
        self._forms = forms
        if not forms:
            self._pattern = None
            return
        parts = [_form_pattern(f, self.language) for f in sorted(forms, key=len, reverse=True)]
        if self.language == "zh":
            self._pattern = re.compile("|".join(parts))
        else:
            self._pattern = re.compile(r"(?<![\w'’])(?:" + "|".join(parts) + r")(?![\w’]|'\w)")

    def index(self, name: str) -> int | None:
        """The member a name (main name, alias or short form) means, when it means exactly one."""
        who = self._forms.get(name) or self._forms.get(_normal(name))
        return who[0] if who and len(who) == 1 else None

    def lookup(self, name: str) -> tuple[int, ...]:
        """Every member a name can mean."""
        return self._forms.get(name) or self._forms.get(_normal(name)) or ()

    def mentions(self, text: str, start: int = 0, end: int | None = None) -> list[Mention]:
        """The cast's names in ``text[start:end]``, in order."""
        if self._pattern is None:
            return []
        out = []
        for m in self._pattern.finditer(text, start, len(text) if end is None else end):
            found = m.group()
            who = self._forms.get(found) or self._forms.get(_normal(found)) or self._forms.get(" ".join(found.split()))
            if not who and found[:1].islower():  # a description matched without regard to case
                who = next((v for k, v in self._forms.items() if k.lower() == " ".join(found.split()).lower()), ())
            if who:
                out.append(Mention(m.start(), m.end(), who))
        return out

    def with_genders(self, text: str, mentions: list[Mention] | None = None) -> "Cast":
        """A copy whose members without a gender get one from titles, else from the pronoun after their names."""
        votes = [Counter() for _ in self.members]
        pronoun = _ZH_PRONOUN_AFTER if self.language == "zh" else _EN_PRONOUN_AFTER
        for men in mentions if mentions is not None else self.mentions(text):
            if len(men.who) != 1:
                continue
            window = text[men.end: men.end + (20 if self.language == "zh" else 80)]
            if '"' in window or "“" in window:
                window = re.split(r'["“]', window, maxsplit=1)[0]
            p = pronoun.search(window)
            if p:
                g = p.group().lower()
                votes[men.who[0]]["f" if g in ("她", "she", "her", "hers", "herself") else "m"] += 1
        members = []
        for m, v in zip(self.members, votes):
            gender = m.gender or next((g for n in m.names if (g := title_gender(n))), None)
            if gender is None and sum(v.values()) >= 2:
                (top, n), = v.most_common(1)
                if n >= 0.7 * sum(v.values()):
                    gender = top
            members.append(replace(m, gender=gender))
        return Cast(members, self.language, list(self.merges))


def _normal(form: str) -> str:
    return re.sub(r"\.(?=\s)", "", " ".join(form.split()))


def _form_pattern(form: str, language: str) -> str:
    """A regex for one name: titles match with or without a full stop; a description ignores case."""
    if language == "zh":
        return re.escape(form)
    words = form.split()
    if words and words[0].lower() in ("the", "a", "an") and len(words) > 1:
        return "(?i:" + re.escape(form) + ")"
    return re.escape(form).replace(r"\.\ ", r"\.?\ ").replace(r"\ ", r"\s+")


def parse_cast(text: str, path: Path | str = "<cast>", language: str = "en") -> Cast:
    """A cast from a cast file's text; a malformed line names its line number."""
    members, seen = [], {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip().lstrip("\ufeff")
        if not line:
            continue
        names = [x.strip() for x in line.split("|")]
        if any(not x for x in names):
            raise CastError(f"line {n}: an empty name in {raw.strip()!r}; separate a character's names with '|' "
                            "and put nothing after the last one", path)
        if any(len(x) > MAX_NAME_CHARS for x in names):
            raise CastError(f"line {n}: a name longer than {MAX_NAME_CHARS} characters", path)
        if names[0] in seen:
            raise CastError(f"line {n}: {names[0]!r} is already on line {seen[names[0]]}; give each character "
                            "one line", path)
        seen[names[0]] = n
        members.append(Member(names[0], tuple(dict.fromkeys(x for x in names[1:] if x != names[0]))))
        if len(members) > MAX_CAST:
            raise CastError(f"more than {MAX_CAST} characters; keep the ones that speak", path)
    if not members:
        raise CastError("has no characters: write one a line, names separated by '|' (Sherlock Holmes|Holmes)", path)
    return Cast(members, language)


def read_cast(path: Path | str, language: str = "en") -> Cast:
    """A cast file read from disk (UTF-8)."""
    p = Path(path)
    try:
        data = p.read_bytes()[: 1 << 20].decode("utf-8-sig")
    except OSError as exc:
        raise CastError(f"cannot read it: {exc.strerror or exc}", p) from None
    except UnicodeDecodeError:
        raise CastError("is not UTF-8; re-save it as UTF-8", p) from None
    return parse_cast(data, p, language)
