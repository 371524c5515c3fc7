"""chatharuhi: role-play chatbots that speak as a character, grounded in the character's own scenes.

    from chatharuhi import ChatHaruhi
    bot = ChatHaruhi(role="haruhi")
    print(bot.chat(text="我们去找外星人吧", role="阿虚"))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public names -> the module that defines them; imported on first use so ``import chatharuhi`` stays
# fast (numpy, pydantic and the backends load only when needed).
_EXPORTS = {
    "AdapterError": ".errors",
    "AdapterMismatch": ".errors",
    "AdapterNotPulled": ".errors",
    "Backend": ".backends.base",
    "BackendConnectionError": ".errors",
    "BackendError": ".errors",
    "BackendResponseError": ".errors",
    "BackendTimeout": ".errors",
    "BackendUnavailable": ".errors",
    "Budget": ".prompting.packing",
    "BudgetError": ".errors",
    "Character": ".character",
    "CharacterError": ".errors",
    "CharacterImportError": ".errors",
    "CharacterNotFound": ".errors",
    "ChatHaruhi": ".compat.api",
    "Chatbot": ".chat.chatbot",
    "ChatHaruhiError": ".errors",
    "Embedder": ".retrieval.embeddings",
    "EmbedderError": ".errors",
    "Fact": ".types",
    "GroupChat": ".chat.group",
    "InputError": ".errors",
    "InvalidCharacter": ".errors",
    "Line": ".types",
    "Lorebook": ".prompting.lorebook",
    "Manifest": ".character",
    "Message": ".types",
    "MissingAPIKey": ".errors",
    "ModelDownloadError": ".errors",
    "ModelError": ".errors",
    "Persona": ".prompting.persona",
    "Plan": ".chat.reply",
    "Reply": ".chat.reply",
    "Round": ".types",
    "Said": ".types",
    "Scene": ".types",
    "ScoredScene": ".types",
    "Session": ".sessions",
    "SessionError": ".errors",
    "SessionNotFound": ".errors",
    "SessionStore": ".sessions",
    "TemplateError": ".errors",
    "Trace": ".types",
    "Turn": ".types",
    "UnknownAdapter": ".errors",
    "UnknownBackend": ".errors",
    "UnknownModel": ".errors",
    "UnknownOption": ".errors",
    "WorkerCrashed": ".errors",
    "available_backends": ".backends.registry",
    "find_character": ".character.discovery",
    "get_backend": ".backends.registry",
    "get_embedder": ".retrieval.embeddings",
    "list_characters": ".character.discovery",
    "load_character": ".character",
    "pack": ".prompting.packing",
    "pull_model": ".models",
    "register_backend": ".backends.registry",
}

__all__ = [
    "AdapterError",
    "AdapterMismatch",
    "AdapterNotPulled",
    "Backend",
    "BackendConnectionError",
    "BackendError",
    "BackendResponseError",
    "BackendTimeout",
    "BackendUnavailable",
    "Budget",
    "BudgetError",
    "Character",
    "CharacterError",
    "CharacterImportError",
    "CharacterNotFound",
    "ChatHaruhi",
    "ChatHaruhiError",
    "Chatbot",
    "Embedder",
    "EmbedderError",
    "Fact",
    "GroupChat",
    "InputError",
    "InvalidCharacter",
    "Line",
    "Lorebook",
    "Manifest",
    "Message",
    "MissingAPIKey",
    "ModelDownloadError",
    "ModelError",
    "Persona",
    "Plan",
    "Reply",
    "Round",
    "Said",
    "Scene",
    "ScoredScene",
    "Session",
    "SessionError",
    "SessionNotFound",
    "SessionStore",
    "TemplateError",
    "Trace",
    "Turn",
    "UnknownAdapter",
    "UnknownBackend",
    "UnknownModel",
    "UnknownOption",
    "WorkerCrashed",
    "available_backends",
    "find_character",
    "get_backend",
    "get_embedder",
    "list_characters",
    "load_character",
    "pack",
    "pull_model",
    "register_backend",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'chatharuhi' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs
    from .backends.base import Backend
    from .backends.registry import available_backends, get_backend, register_backend
    from .character.discovery import find_character, list_characters
    from .character.folder import Character, Manifest, load_character
    from .chat.chatbot import Chatbot
    from .chat.group import GroupChat
    from .chat.reply import Plan, Reply
    from .compat.api import ChatHaruhi
    from .errors import (
        AdapterError,
        AdapterMismatch,
        AdapterNotPulled,
        BackendConnectionError,
        BackendError,
        BackendResponseError,
        BackendTimeout,
        BackendUnavailable,
        BudgetError,
        CharacterError,
        CharacterImportError,
        CharacterNotFound,
        ChatHaruhiError,
        EmbedderError,
        InputError,
        InvalidCharacter,
        MissingAPIKey,
        ModelDownloadError,
        ModelError,
        SessionError,
        SessionNotFound,
        TemplateError,
        UnknownAdapter,
        UnknownBackend,
        UnknownModel,
        UnknownOption,
    )
    from .models import pull_model
    from .prompting.lorebook import Lorebook
    from .prompting.packing import Budget, pack
    from .prompting.persona import Persona
    from .retrieval.embeddings import Embedder, get_embedder
    from .sessions import Session, SessionStore
    from .types import (
        Fact,
        Line,
        Message,
        Round,
        Said,
        Scene,
        ScoredScene,
        Trace,
        Turn,
    )
