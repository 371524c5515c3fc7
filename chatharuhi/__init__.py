"""chatharuhi: role-play chatbots that speak as a character, grounded in the character's own scenes.

    from chatharuhi import ChatHaruhi
    bot = ChatHaruhi(role="haruhi")
    print(bot.chat(text="我们去找外星人吧", role="阿虚"))
"""

from .backends.base import Backend
from .backends.registry import available_backends, get_backend, register_backend
from .character import Character, Manifest, load_character
from .chatbot import ChatHaruhi, Plan, Reply
from .discovery import find_character, list_characters
from .embeddings import Embedder, get_embedder
from .errors import (
    BackendConnectionError,
    BackendError,
    BackendResponseError,
    BackendTimeout,
    BackendUnavailable,
    BudgetError,
    CharacterError,
    CharacterNotFound,
    ChatHaruhiError,
    EmbedderError,
    InputError,
    InvalidCharacter,
    MissingAPIKey,
    SessionError,
    TemplateError,
    UnknownBackend,
)
from .packing import Budget, pack
from .types import Line, Message, Scene, ScoredScene, Trace, Turn

__version__ = "0.1.0"

__all__ = [
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
    "CharacterNotFound",
    "ChatHaruhi",
    "ChatHaruhiError",
    "Embedder",
    "EmbedderError",
    "InputError",
    "InvalidCharacter",
    "Line",
    "Manifest",
    "Message",
    "MissingAPIKey",
    "Plan",
    "Reply",
    "Scene",
    "ScoredScene",
    "SessionError",
    "TemplateError",
    "Trace",
    "Turn",
    "UnknownBackend",
    "available_backends",
    "find_character",
    "get_backend",
    "get_embedder",
    "list_characters",
    "load_character",
    "pack",
    "register_backend",
]
