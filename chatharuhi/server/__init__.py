"""The OpenAI-compatible HTTP server where the model is the character (``chatharuhi serve``)."""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "serve"]


def __getattr__(name: str) -> Any:
    # fastapi loads only when the server is used, not when a submodule such as ``server.api`` is imported
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "serve":
        from .run import serve

        return serve
    raise AttributeError(f"module 'chatharuhi.server' has no attribute {name!r}")
