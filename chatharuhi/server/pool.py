"""What a server serves: one shared backend and one ``Chatbot`` per character, built on first use."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backends.base import Backend
from ..errors import InvalidCharacter
from .api import model_name_problem
from .errors import APIError


@dataclass
class BotPool:
    """One shared ``Chatbot`` per character, created on first use; safe to use from many threads."""

    backend: Backend
    characters_dir: Any = None
    bot_options: dict[str, Any] = field(default_factory=dict)
    _bots: dict[str, Any] = field(default_factory=dict)  # folder name -> bot
    _names: dict[str, str] = field(default_factory=dict)  # requested name (casefolded) -> folder name
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _building: dict[str, threading.Lock] = field(default_factory=dict)
    _groups: dict[str, Any] = field(default_factory=dict)  # "haruhi+wukong" -> its GroupChat

    def group(self, model: str):
        """The ``GroupChat`` for ``model`` (members' names or aliases joined by "+"), built on first use."""
        from ..chat.group import GroupChat
        from ..config import MAX_GROUP_SIZE

        parts = [p.strip() for p in model.split("+")]
        if len(parts) > MAX_GROUP_SIZE:
            raise APIError(400, f"a group holds at most {MAX_GROUP_SIZE} characters; {len(parts)} were named",
                           param="model", code="group_too_large")
        if not all(parts):
            raise APIError(404, f"Unknown group {model[:100]!r}: join members' names with '+' (haruhi+wukong)",
                           param="model", code="model_not_found")
        characters = [self.get(p).character for p in parts]  # an unknown member is a 404 naming it
        key = "+".join(c.name for c in characters)
        with self._lock:
            build_lock = self._building.setdefault(key, threading.Lock())
        with build_lock:
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = GroupChat(characters, llm=self.backend, **self.bot_options)
        return group

    def cached(self, model: str):
        """The chatbot for ``model`` if it was built already (no lookup, no thread), else None."""
        folder = self._names.get(model.strip().casefold())
        return self._bots[folder] if folder is not None else None

    def get(self, model: str):
        """The chatbot for ``model`` (a folder name or alias); ``CharacterNotFound`` lists the names."""
        key = model.strip().casefold()
        folder = self._names.get(key)
        if folder is not None:
            return self._bots[folder]
        from ..character.discovery import find_entry
        from ..chat.chatbot import Chatbot

        if model_name_problem(model):
            raise APIError(404, f"Unknown character {model[:100]!r}: {model_name_problem(model)}", param="model",
                           code="model_not_found")
        entry = find_entry(model, self.characters_dir)  # raises for unknown names
        with self._lock:
            build_lock = self._building.setdefault(entry.name, threading.Lock())
        with build_lock:  # one build per character; other characters are not held up
            bot = self._bots.get(entry.name)
            if bot is None:
                try:
                    if entry.error is not None:
                        raise entry.error
                    bot = Chatbot(entry.path, llm=self.backend, **self.bot_options)
                except InvalidCharacter as exc:  # named by its file inside the folder, never the server's path
                    raise APIError(400, _broken(entry, exc), param="model", code="character_invalid") from None
                self._bots[entry.name] = bot
        self._names[key] = entry.name
        return bot

    def canonical(self, model: str) -> str:
        """The ``/v1/models`` id of a name or alias (after ``get``): what responses echo as ``model``."""
        return self._names.get(model.strip().casefold()) or self.get(model).character.path.name

    def models(self) -> list[dict[str, Any]]:
        """``/v1/models`` entries: id = folder name, with aliases and a description."""
        from ..character.discovery import list_characters

        out = []
        for e in list_characters(self.characters_dir):
            if e.error is not None or e.manifest is None:
                continue
            m = e.manifest
            out.append({"id": e.name, "object": "model", "created": _created(e.path), "owned_by": "chatharuhi",
                        "aliases": e.aliases[1:], "display_name": m.display_name or e.name,
                        "language": m.language, "description": m.description, "greeting": m.greeting})
        return out


def _broken(entry: Any, exc: InvalidCharacter) -> str:
    """``character 'x' cannot be loaded: texts/a.txt line 3: <reason>`` (no path outside the folder)."""
    where = ""
    if exc.path is not None:
        path = Path(str(exc.path))
        try:
            where = path.relative_to(entry.path).as_posix()
        except ValueError:
            where = path.name
        where = (where if where != "." else entry.name + "/") + (f" line {exc.line}" if exc.line else "") + ": "
    return f"character {entry.name!r} cannot be loaded: {where}{exc.reason}; fix the character's folder"


def _created(folder: Any) -> int:
    """A character's ``created``: when its folder's defining file (manifest, else system prompt) was written."""
    for name in ("character.toml", "character.json", "system_prompt.txt"):
        try:
            return int(Path(folder, name).stat().st_mtime)
        except OSError:
            continue
    try:
        return int(Path(folder).stat().st_mtime)
    except OSError:
        return 0
