"""The ``debug`` backend (ChatHaruhi's ``llm='debug'``): the reply is the prompt it was sent.

Each message is written as ``System:``/``User:``/``AI:`` and a newline, then its content, so the
whole prompt (system prompt, retrieved scenes, history, query) can be read or pasted into any chat
model. No model, no network.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from ..types import Message
from .base import Backend

ROLE_LABELS = {"system": "System", "user": "User", "assistant": "AI"}


def render_prompt(messages: Sequence[Message]) -> str:
    """The messages as readable text, one block per message."""
    blocks = []
    for m in messages:
        role, content = (m.role, m.content) if isinstance(m, Message) else (m["role"], m["content"])
        blocks.append(f"{ROLE_LABELS.get(role, role)}: \n{content}")
    return "\n".join(blocks)


class DebugBackend(Backend):
    """Echoes the prompt: the reply is every message it was sent, labelled by role."""

    name = "debug"
    transcript = True  # the reply is not the character speaking: a chatbot must not cut or strip it
    # Sampling options mean nothing here; they are accepted so that a chatbot's defaults pass through.
    call_options = frozenset({"max_tokens", "stop", "temperature", "top_p"})

    def __init__(self, context_window: int | None = None):
        if context_window:
            self.context_window = context_window

    def stream(self, messages: Sequence[Message], **options: Any) -> Iterator[str]:
        """Yield the rendered prompt (stop strings and max_tokens do not cut it: it is a transcript)."""
        self.check_call_options(options)
        yield render_prompt(messages)
