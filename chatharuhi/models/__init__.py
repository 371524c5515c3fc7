"""Local GGUF models by name: a curated catalogue, ``pull``/``rm`` into the chatharuhi home, default choice.

    chatharuhi models list                  the table, with what is pulled
    chatharuhi models pull qwen2.5-3b       download (resumable, sha256-checked) into <home>/models/
    chatharuhi chat haruhi --model qwen2.5-3b
    ChatHaruhi(role="haruhi", llm="llama_cpp", model="qwen2.5-3b")

``catalog`` holds the table, ``store`` the on-disk layout, ``download`` the pull, ``selection`` the
default choice, notices and the language warning, ``commands`` the command line.
"""

from __future__ import annotations

from .catalog import BUILTIN, ModelEntry, ModelFile, catalog, find_model, is_model_name
from .download import pull_model
from .selection import default_pulled, describe, language_warning
from .store import installed, installed_models, model_path, remove

__all__ = [
    "BUILTIN",
    "ModelEntry",
    "ModelFile",
    "catalog",
    "default_pulled",
    "describe",
    "find_model",
    "installed",
    "installed_models",
    "is_model_name",
    "language_warning",
    "model_path",
    "pull_model",
    "remove",
]
