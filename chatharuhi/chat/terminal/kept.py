"""The chats the terminal keeps: stored in the session store like the web demo's and marked as terminal chats in
the demo's owners table, so ``/load``, ``--resume`` and the demo served on this machine list them."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterator

from ...errors import InputError

if TYPE_CHECKING:
    from ...sessions import SessionStore

LOAD_LIST_SIZE = 10
TITLE_CHARS = 30


def terminal_owners(store: "SessionStore"):
    """The demo's table of chat owners beside ``store`` (terminal chats are marked there)."""
    from ...sessions.owners import Owners, owners_path_for

    return Owners(owners_path_for(store))


def terminal_chats(store: "SessionStore", character: str) -> list:
    """This character's terminal chats, newest first."""
    owners = terminal_owners(store)
    try:
        ids = set(owners.terminal_sessions())
    finally:
        owners.close()
    found = [s for s in store.list(character=character, limit=1000) if s.id in ids]
    return sorted(found, key=lambda s: s.updated, reverse=True)


def claim(store: "SessionStore", session_id: str) -> None:
    """Mark a stored chat as a terminal chat."""
    owners = terminal_owners(store)
    try:
        owners.claim_terminal(session_id)
    finally:
        owners.close()


def keep_first(store: "SessionStore", session_id: str, first: str) -> None:
    """After the first turn: title the chat by its first line (``first``) and mark it as a terminal chat."""
    store.rename(session_id, first if len(first) <= TITLE_CHARS else first[: TITLE_CHARS - 1] + "…")
    claim(store, session_id)


def listing(store: "SessionStore", chats: list, unit: str) -> Iterator[str]:
    """``/load``'s lines: the newest chats, numbered, each with its number of turns (``unit``) and its date."""
    for i, s in enumerate(chats[:LOAD_LIST_SIZE], 1):
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.updated))
        yield f"  {i}. {s.title or '(untitled)'} · {len(store.turns(s.id))} {unit} · {when}"


def latest_chat(store: "SessionStore", character: str) -> str:
    """The id of the newest terminal chat with ``character`` (``--resume`` without an id)."""
    chats = terminal_chats(store, character)
    if not chats:
        raise InputError(f"no earlier terminal chat with {character} to resume: start one with "
                         f"`chatharuhi chat {character}`")
    return chats[0].id


def resume_id(store: "SessionStore", resume: Any, key: str) -> Any:
    """``resume`` as a session id: True is the newest chat of ``key`` (a character's or a group's name)."""
    return latest_chat(store, key) if resume is True else resume
