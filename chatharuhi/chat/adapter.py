"""A character's LoRA adapter on the chatbot's backend (``use_adapter=``): named in the options of a llama.cpp
model, loaded into the backend when the chatbot is made (a bad one fails then, not at the first reply), or, on a
backend that cannot apply it, refused (``use_adapter=True``) or warned about (None)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from ..errors import AdapterError, InputError

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..character.folder import Character


def with_adapter_options(character: "Character", llm: Any, options: dict[str, Any],
                         mode: bool | None) -> dict[str, Any]:
    """The backend's options for ``llm=``, with what names the character's adapter for a llama.cpp model."""
    if mode not in (None, True, False):
        raise InputError(f"use_adapter={mode!r}: use None (the character's adapter when the backend can "
                         "apply it), True (required) or False (the base model)")
    if mode is not False and character.adapter is not None:
        from ..models.adapters import llama_adapter_options

        return llama_adapter_options(character.adapter, llm, options)
    return options


def attach_adapter(character: "Character", backend: "Backend", mode: bool | None) -> dict[str, Any]:
    """Load the character's adapter into ``backend`` now; returns the call options that select it."""
    spec = character.adapter
    if spec is None or mode is False:
        if mode is True:
            raise InputError(f"use_adapter=True but {character.name!r} names no adapter: add an [adapter] "
                             "table to its character.toml")
        return {}
    options = backend.use_adapter(spec)
    if options is None:
        message = (f"character {character.name!r} names a LoRA adapter, but the {backend.name} backend "
                   "cannot apply it: use the transformers backend with its base (path), llama_cpp or embedded "
                   "with its base (gguf), or an OpenAI-compatible server (served_name)")
        if mode is True:
            raise AdapterError(message)
        warnings.warn(message + "; replying with the base model (use_adapter=False silences this)", stacklevel=3)
        return {}
    return options
