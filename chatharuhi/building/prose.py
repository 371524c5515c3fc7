"""Prose in, attributed quotations out: paragraphs, quotations, mentions and the sieve, for one text."""

from __future__ import annotations

from dataclasses import dataclass

from .attribution import Attribution, Sieve
from .cast import Cast
from .context import Context
from .quotes import find_quotations, split_paragraphs


@dataclass
class ProseResult:
    """The indexed text and one attribution per quotation."""

    ctx: Context
    attributions: list[Attribution]
    narrator: int | None


def attribute_prose(text: str, cast: Cast, language: str, narrator: int | None = None) -> ProseResult:
    """Find and attribute every quotation of ``text`` against ``cast``."""
    paragraphs = split_paragraphs(text, language)
    quotes = find_quotations(text, paragraphs, language)
    ctx = Context(text, language, paragraphs, quotes, cast)
    sieve = Sieve(ctx, narrator)
    return ProseResult(ctx, sieve.run(), sieve.narrator)
