"""The slash commands every terminal chat shares: ``/remember``, ``/memory``, ``/fact`` and ``/forget`` on its
memory, and the answer to an unknown command (named with the closest one; never sent to the characters)."""

from __future__ import annotations

import difflib
from typing import Any, Callable, Sequence

from ...errors import ChatHaruhiError

MEMORY_COMMANDS = ("/remember", "/memory", "/fact", "/forget")
CHAT_HINT = "type /help for commands"


def unknown_command(name: str, known: Sequence[str]) -> str:
    """What an unknown command gets: its name, the closest known one, and how to say something starting with /."""
    close = difflib.get_close_matches(name, known, n=1)
    return (f"unknown command {name}" + (f"; did you mean {close[0]}?" if close else "") +
            f" ({CHAT_HINT}; to say something starting with /, put a space before it)")


def memory_command(memory: Any, name: str, arg: str, out: Callable[[str], None], group: bool = False) -> None:
    """``/remember``, ``/memory``, ``/fact`` and ``/forget`` on a chat's memory (a chatbot's, or a group's:
    ``/remember @NAME TEXT`` pins for one member)."""
    if memory is None:
        out("(this chat was started with memory off)")
        return
    try:
        if name == "/remember":
            if not arg:
                out("usage: /remember TEXT   (in a group, /remember @NAME TEXT pins it for one character)")
                return
            who, _, rest = arg.partition(" ")
            one = group and who.startswith("@") and rest.strip()
            fact = memory.pin(rest, character=who[1:]) if one else memory.pin(arg)
            out(f"(pinned as fact {fact.id}: it is in every prompt of this chat; /memory lists the facts)")
        elif name == "/memory":
            _show_memory(memory, out)
        else:
            number, _, text = arg.partition(" ")
            if not number:
                out(f"usage: {name} N{' TEXT' if name == '/fact' else ''}   (/memory lists the facts' numbers)")
            elif name == "/fact":
                out(f"(fact {memory.edit(number, text).id} changed)")
            else:
                out(f"(fact {memory.forget(number).id} unpinned)")
    except ChatHaruhiError as exc:
        out(f"error: {exc}")


def _show_memory(memory: Any, out: Callable[[str], None]) -> None:
    facts = memory.facts
    if not facts:
        out("(no pinned facts: /remember TEXT pins one)")
    for fact in facts:
        out(f"  {fact.id}. {fact.text}" + (f"   (only {fact.character})" if fact.character else ""))
    if memory.summary:
        out(f"summary: {memory.summary}")
    out(f"({len(memory.entries)} earlier turns can be recalled when they match what you say)")
