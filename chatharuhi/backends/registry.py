"""Backend registry: ``name -> factory``, plus the ``chatharuhi.backends`` entry-point group.

Selection when the user names no backend: an explicit argument, then ``CHATHARUHI_BACKEND``, then
``OPENAI_API_KEY``/``OPENAI_BASE_URL`` (the ``openai`` backend), then a clear error.
"""

from __future__ import annotations

import os
import threading
from importlib.metadata import entry_points
from typing import Any, Callable

from ..config import ENV_BACKEND, ENV_OPENAI_API_KEY, ENV_OPENAI_BASE_URL
from ..errors import BackendUnavailable, UnknownBackend
from .base import Backend

ENTRY_POINT_GROUP = "chatharuhi.backends"

BackendFactory = Callable[..., Backend]

_registry: dict[str, BackendFactory] = {}
_entry_points_loaded = False
_lock = threading.Lock()


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``factory(**options)`` available under ``name``."""
    _registry[name] = factory


def _builtin_factories() -> dict[str, BackendFactory]:
    def openai(**options: Any) -> Backend:
        from .openai_compat import OpenAIBackend

        return OpenAIBackend(**options)

    def scripted(**options: Any) -> Backend:
        from .scripted import ScriptedBackend

        return ScriptedBackend(**options)

    return {"openai": openai, "scripted": scripted}


def _load_entry_points() -> None:
    global _entry_points_loaded
    with _lock:
        if _entry_points_loaded:
            return
        for name, factory in _builtin_factories().items():
            _registry.setdefault(name, factory)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            _registry.setdefault(ep.name, _lazy(ep))  # imported only when first used
        _entry_points_loaded = True


def _lazy(ep) -> BackendFactory:
    def factory(**options: Any) -> Backend:
        return ep.load()(**options)

    return factory


def available_backends() -> list[str]:
    """Names of every registered backend, built-in and from entry points."""
    _load_entry_points()
    return sorted(_registry)


def get_backend(name: str, **options: Any) -> Backend:
    """Build the backend registered as ``name``; an unknown name lists the available ones."""
    _load_entry_points()
    try:
        factory = _registry[name]
    except KeyError:
        raise UnknownBackend(name, list(_registry)) from None
    return factory(**options)


NO_BACKEND_HELP = (
    "No language-model backend is configured. Choose one of:\n"
    "  - an OpenAI-compatible API: set OPENAI_API_KEY (and OPENAI_BASE_URL for vLLM, Ollama or a llama.cpp "
    "server), or pass llm='openai' with api_key=/base_url=;\n"
    "  - a backend by name: set CHATHARUHI_BACKEND or pass llm=<name> (available: {names});\n"
    "  - on the command line: --backend NAME [--model M] [--base-url URL]."
)


def resolve_backend(llm: Backend | str | None = None, **options: Any) -> Backend:
    """Pick the backend: explicit argument, then environment, else ``BackendUnavailable``."""
    if isinstance(llm, Backend):
        return llm
    if isinstance(llm, str):
        return get_backend(llm, **options)
    env_name = os.environ.get(ENV_BACKEND)
    if env_name:
        return get_backend(env_name, **options)
    if os.environ.get(ENV_OPENAI_API_KEY) or os.environ.get(ENV_OPENAI_BASE_URL):
        return get_backend("openai", **options)
    raise BackendUnavailable(NO_BACKEND_HELP.format(names=", ".join(available_backends())))
