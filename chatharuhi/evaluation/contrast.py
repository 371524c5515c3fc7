"""The contrast set: the other characters the identity and voice judges tell a character apart from.

A judge that knows one character cannot attribute anything: identity is "nearer this character's lines
than every other one's", voice "more likely this character than the best other one". So the characters
being evaluated are judged against each other plus a contrast set: the ``compare=`` characters when
given, else every other available character (built-ins, the user's folder, ``--characters-dir``) in the
evaluated characters' languages. Two folders of the same character (the built-in ``haruhi`` and a copy,
or ``Sheldon`` and ``sheldon/``) would make the judge tell a character from itself: a given set holding
one twice is refused, naming both; the default set leaves the copy out and says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..character.discovery import list_characters, resolve_character
from ..character.folder import Character
from ..config import EVAL_MAX_CONTRAST
from ..errors import CharacterError, InputError

LANGUAGES = {"zh": "Chinese", "en": "English"}


def names_of(character: Character) -> set[str]:
    """Every name the character goes by (folder, display name, speaker, aliases), case-folded."""
    names = {character.name, character.display_name, character.speaker, *character.aliases}
    return {n.strip().casefold() for n in names if n and n.strip()}


def same_character(a: Character, b: Character) -> str | None:
    """A name ``a`` and ``b`` share (so they are the same character), or None."""
    if a.path.resolve() == b.path.resolve():
        return a.name
    shared = names_of(a) & names_of(b)
    return min(shared) if shared else None


def describe(character: Character) -> str:
    """``name (folder)`` for messages."""
    return f"{character.name!r} ({character.path})"


def require_distinct(characters: Sequence[Character], what: str) -> None:
    """Raise ``InputError`` when two of ``characters`` are the same character (by folder or any shared name)."""
    for i, a in enumerate(characters):
        for b in characters[i + 1:]:
            shared = same_character(a, b)
            if shared is not None:
                raise InputError(f"{what}: {describe(a)} and {describe(b)} are the same character (both are called "
                                 f"{shared!r}); name each character once")


def language_name(code: str) -> str:
    """'English' for 'en', 'Chinese' for 'zh...', else the code."""
    return LANGUAGES.get(code[:2], code)


@dataclass
class Contrast:
    """The characters added to the judges, where they came from, and what was left out and why."""

    characters: list[Character] = field(default_factory=list)
    source: str = "given"  # "given" (compare=) or "available" (the default)
    left_out: list[str] = field(default_factory=list)  # "NAME: why", for the summary

    def summary(self, evaluated: Sequence[Character]) -> dict[str, Any]:
        """What ``summary.json`` says: per evaluated character, the characters it was judged against."""
        judged = [*evaluated, *self.characters]
        per = {c.name: [o.name for o in judged if o is not c] for c in evaluated}
        return {"source": self.source, "characters": [c.name for c in self.characters], "per_character": per,
                "left_out": list(self.left_out)}


def given_contrast(refs: Iterable[str | os.PathLike | Character], evaluated: Sequence[Character],
                   characters_dir: Any = None) -> Contrast:
    """The ``compare=`` characters, refused when one is named twice or is an evaluated character."""
    chosen = [resolve_character(r, characters_dir) for r in refs]
    require_distinct([*evaluated, *chosen], "the evaluated and --compare characters")
    return Contrast(chosen, "given")


def available_contrast(evaluated: Sequence[Character], characters_dir: Any = None,
                       limit: int = EVAL_MAX_CONTRAST) -> Contrast:
    """Every other available character in the evaluated characters' languages, each character once (the
    first folder found; later copies are left out and named), at most ``limit`` of them."""
    languages = {c.language[:2] for c in evaluated}
    contrast = Contrast(source="available")
    for entry in list_characters(characters_dir):
        if entry.error is not None:
            contrast.left_out.append(f"{entry.name}: cannot be loaded ({entry.error})")
            continue
        try:
            character = resolve_character(entry.path)
        except CharacterError as exc:
            contrast.left_out.append(f"{entry.name}: cannot be loaded ({exc})")
            continue
        if any(same_character(character, e) for e in evaluated):
            continue  # the evaluated character itself, or a copy of it
        copy = next((k for k in contrast.characters if same_character(character, k)), None)
        if copy is not None:
            contrast.left_out.append(f"{character.name} ({character.path}): the same character as {copy.name} "
                                     f"({copy.path})")
            continue
        if character.language[:2] not in languages:
            continue  # another language: any judge tells it apart, so it would only flatter the score
        if len(contrast.characters) >= limit:
            contrast.left_out.append(f"{character.name}: over the limit of {limit} contrast characters")
            continue
        contrast.characters.append(character)
    return contrast


def why_empty(character: Character, others: Sequence[str], contrast: Contrast) -> str | None:
    """Why ``character`` has no identity or voice score (None when it has others to be told apart from)."""
    if others:
        return None
    if contrast.source == "given":
        return (f"{character.name} was judged against no other character: --compare named none and it was the only "
                f"character evaluated; name characters to tell it apart from with --compare NAME...")
    language = language_name(character.language)
    return (f"no other {language} character is available to tell {character.name} apart from (built-ins, the "
            f"user's characters folder and --characters-dir were searched); add one with --characters-dir DIR "
            f"or --compare NAME...")
