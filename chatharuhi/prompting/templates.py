"""Prompt templates: files under ``prompts/<language>/``, rendered strictly (a missing variable raises)."""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

from ..config import prompts_dir
from ..errors import TemplateError

SUPPORTED_LANGUAGES = ("zh", "en")


@dataclass(frozen=True)
class Template:
    """A ``str.format`` template read from a file; ``render`` raises on a missing variable."""

    text: str
    source: str = "<string>"

    @cached_property
    def fields(self) -> frozenset[str]:
        """Names of the variables the template uses."""
        return frozenset(f for _, f, _, _ in string.Formatter().parse(self.text) if f)

    def render(self, **values: object) -> str:
        """Fill the template; every variable it uses must be given."""
        missing = sorted(self.fields - values.keys())
        if missing:
            raise TemplateError(f"{self.source}: missing template variable(s) {', '.join(missing)}")
        return self.text.format(**values)


def language_folder(language: str) -> str:
    """The prompts folder for a language code: ``zh*`` -> ``zh``, anything else -> ``en``."""
    return "zh" if language.lower().startswith("zh") else "en"


@lru_cache(maxsize=64)
def load_template(name: str, language: str = "zh", root: Path | None = None) -> Template:
    """Read ``prompts/<language>/<name>.txt``."""
    path = (root or prompts_dir()) / language_folder(language) / f"{name}.txt"
    try:
        return Template(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        raise TemplateError(f"prompt template not found: {path}") from None


@dataclass(frozen=True)
class PromptSet:
    """The templates one character's prompts are built from."""

    story_header: Template
    scene: Template
    line: Template

    @classmethod
    def load(cls, language: str = "zh", root: Path | None = None, examples: bool = False) -> "PromptSet":
        """The templates for a language; with ``examples`` the retrieved texts are introduced as examples of how
        the character speaks (a card's example dialogue), not as scenes of a work (``examples_header.txt``)."""
        header = "examples_header" if examples else "story_header"
        return cls(*(load_template(n, language, root) for n in (header, "scene", "line")))
