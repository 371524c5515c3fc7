"""Backend registry: ``name -> factory``, plus the ``chatharuhi.backends`` entry-point group.

Selection when the user names no backend: an explicit argument, then ``CHATHARUHI_BACKEND``, then
``OPENAI_API_KEY``/``OPENAI_BASE_URL`` (the ``openai`` backend), then the embedded offline model
(``embedded``: llama-cpp-python + the pinned SmolLM2 GGUF, when both are installed, with a one-line
notice on stderr), then a clear error that says how to install it or configure another backend.

Built-in names: ``openai``, ``scripted``, ``llama_cpp`` (any GGUF file: ``model_path=``), ``embedded``
(``llama_cpp`` with the pinned default model) and ``transformers`` (a model folder + LoRA adapters).
"""

from __future__ import annotations

import logging
import os
import threading
from importlib.metadata import entry_points
from typing import Any, Callable

from ..config import (
    EMBEDDED_BUDGET,
    EMBEDDED_FILE,
    EMBEDDED_INSTALL,
    ENV_BACKEND,
    ENV_OPENAI_API_KEY,
    ENV_OPENAI_BASE_URL,
)
from ..errors import BackendUnavailable, UnknownBackend
from .base import Backend

ENTRY_POINT_GROUP = "chatharuhi.backends"

BackendFactory = Callable[..., Backend]

_registry: dict[str, BackendFactory] = {}
_entry_points_loaded = False
_lock = threading.Lock()
logger = logging.getLogger("chatharuhi")


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

    def llama_cpp(**options: Any) -> Backend:
        from .llama_cpp import LlamaCppBackend

        return LlamaCppBackend(**options)

    def embedded(**options: Any) -> Backend:
        from .llama_cpp import LlamaCppBackend

        options.pop("model", None)  # always the pinned default model
        options.pop("model_path", None)
        backend = LlamaCppBackend(**options)
        backend.budget_hint = dict(EMBEDDED_BUDGET)
        return backend

    def transformers(**options: Any) -> Backend:
        from .transformers_backend import TransformersBackend

        return TransformersBackend(**options)

    return {"embedded": embedded, "llama_cpp": llama_cpp, "openai": openai, "scripted": scripted,
            "transformers": transformers}


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
    "  - on the command line: --backend NAME [--model M] [--base-url URL];\n"
    "  - offline, the embedded model ({file}): {install}."
)
EMBEDDED_NOTICE = (
    "chatharuhi: no backend configured; using the embedded offline model {file} (tiny, English-centred: "
    "for trying the pipeline; set OPENAI_API_KEY or CHATHARUHI_BACKEND for a real model)"
)


def resolve_backend(llm: Backend | str | None = None, **options: Any) -> Backend:
    """Pick the backend: explicit argument, then environment, then the embedded model, else ``BackendUnavailable``."""
    if isinstance(llm, Backend):
        return llm
    if isinstance(llm, str):
        return get_backend(llm, **options)
    env_name = os.environ.get(ENV_BACKEND)
    if env_name:
        return get_backend(env_name, **options)
    if os.environ.get(ENV_OPENAI_API_KEY) or os.environ.get(ENV_OPENAI_BASE_URL):
        return get_backend("openai", **options)
    from .embedded import embedded_available

    if embedded_available():
        logger.warning(EMBEDDED_NOTICE.format(file=EMBEDDED_FILE))
        return get_backend("embedded", **options)
    raise BackendUnavailable(NO_BACKEND_HELP.format(names=", ".join(available_backends()), file=EMBEDDED_FILE,
                                                    install=EMBEDDED_INSTALL))
