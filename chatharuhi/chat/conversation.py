"""A chat client's messages read as a conversation: one reader for the HTTP server and the LangChain model.

Rules (the same for both surfaces, so a conversation means the same thing wherever it comes from):

- only ``user`` and ``assistant`` messages count; ``system``/``developer`` ones are left out, because the
  character's own system prompt is used (a front end's generic prompt cannot turn it into someone else);
- the last message must be the user's: it is what the character answers;
- consecutive user messages are one turn, joined by newlines (none is lost);
- an assistant message with no user message before it (a greeting, or a second reply in a row) is a
  turn with empty user text, so it stays in the history;
- a ``name:「…」`` wrapper around a message is stripped; the user's in-story name for a turn is the
  message's ``name`` field, else the wrapper's name, else ``user_role``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from ..errors import InputError
from ..types import Turn

_WRAPPED = re.compile(r"^\s*(?P<name>[^:：「」\n]{1,40}?)\s*[:：]\s*「(?P<text>.*)」\s*$", re.S)


@dataclass(frozen=True)
class Incoming:
    """One message as a client sent it: ``role`` (user, assistant, system, ...), its text, its ``name``."""

    role: str
    text: str
    name: str | None = None


def unwrap(text: str) -> tuple[str | None, str]:
    """``'阿虚:「你好」'`` -> ``('阿虚', '你好')``; other text -> ``(None, text)``."""
    m = _WRAPPED.match(text)
    return (m["name"].strip(), m["text"]) if m else (None, text)


def read_conversation(messages: Sequence[Incoming], user_role: str) -> tuple[list[Turn], str, str | None]:
    """Messages -> (history turns, the query, the in-story name the query came with, if any)."""
    convo = [m for m in messages if m.role in ("user", "assistant")]
    if not convo or convo[-1].role != "user":
        raise InputError("the last message must be the user's: it is what the character answers")
    turns: list[Turn] = []
    pending: list[tuple[str | None, str]] = []  # the user messages since the last reply
    for m in convo:
        wrapped, text = unwrap(m.text)
        name = (m.name or "").strip() or wrapped
        if m.role == "user":
            pending.append((name, text))
            continue
        names = [n for n, _ in pending if n]
        turns.append(Turn(names[-1] if names else user_role, "\n".join(t for _, t in pending), text))
        pending = []
    names = [n for n, _ in pending if n]
    return turns, "\n".join(t for _, t in pending), names[-1] if names else None
