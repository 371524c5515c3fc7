"""Conversations saved to JSON files (``save``/``load``): a chatbot's and a group's, written atomically, read back
checked (a file that cannot be read is a ``SessionError`` naming it and why)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

from ..errors import SessionError
from ..types import Fact, Round, Said, Turn

CONVERSATION_FORMAT = "chatharuhi.conversation/1"
GROUP_FORMAT = "chatharuhi.group/1"


def write_saved(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` as JSON, atomically (a temporary file beside it, then renamed)."""
    path = Path(path).expanduser()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def conversation_data(character: Any, user_role: str, turns: Iterable[Turn]) -> dict[str, Any]:
    """A chatbot's conversation as its file holds it."""
    return {"format": CONVERSATION_FORMAT, "character": character.name, "character_path": str(character.path),
            "user_role": user_role, "history": [asdict(t) for t in turns]}


def read_conversation_file(path: str | os.PathLike) -> tuple[dict[str, Any], list[Turn]]:
    """A file written by ``Chatbot.save``: its fields, and its turns."""
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != CONVERSATION_FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, expected {CONVERSATION_FORMAT!r}")
        history = [Turn(**t) for t in data["history"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SessionError(f"{path}: cannot read the saved conversation: {exc}") from None
    return data, history


def group_data(characters: list[str], user_role: str, rounds: Iterable[Round],
               facts: Iterable[Fact]) -> dict[str, Any]:
    """A group's conversation as its file holds it, with its pinned facts."""
    return {"format": GROUP_FORMAT, "characters": characters, "user_role": user_role,
            "rounds": [{"user_role": r.user_role, "text": r.text, "present": list(r.present),
                        "replies": [asdict(s) for s in r.replies]} for r in rounds],
            "facts": [asdict(f) for f in facts]}


def read_group_file(path: str | os.PathLike) -> tuple[dict[str, Any], list[Round], list[Fact]]:
    """A file written by ``GroupChat.save``: its fields, its rounds and its pinned facts."""
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != GROUP_FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, expected {GROUP_FORMAT!r}")
        rounds = [Round(r["user_role"], r["text"], tuple(Said(**s) for s in r["replies"]), tuple(r["present"]))
                  for r in data["rounds"]]
        facts = [Fact(**f) for f in data.get("facts", [])]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SessionError(f"{path}: cannot read the saved group conversation: {exc}") from None
    return data, rounds, facts
