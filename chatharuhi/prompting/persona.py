"""The user's persona: a name and a description, per session. The prompt includes it and
``{{user}}`` macros (and ``{{char}}``) in the character's texts are filled from it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..options import strict

_USER = re.compile(r"\{\{user\}\}|<USER>", re.IGNORECASE)
_CHAR = re.compile(r"\{\{char\}\}|<BOT>", re.IGNORECASE)


@strict
@dataclass(frozen=True)
class Persona:
    """Who the user plays: ``name`` becomes the user's in-story name, ``description`` enters the prompt."""

    name: str
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            from ..errors import InputError

            raise InputError("a persona needs a name: Persona(name='Kyon', description='...')")


def has_macros(text: str) -> bool:
    """Whether ``text`` holds a ``{{user}}``/``{{char}}`` style macro."""
    return bool(_USER.search(text) or _CHAR.search(text))


def fill_macros(text: str, char: str, user: str) -> str:
    """Replace ``{{char}}``/``<BOT>`` with ``char`` and ``{{user}}``/``<USER>`` with ``user``."""
    if "{" not in text and "<" not in text:
        return text
    return _USER.sub(lambda _: user, _CHAR.sub(lambda _: char, text))
