"""The Gradio web demo (``chatharuhi demo``): its app, layout, per-browser state, chats, edits and characters."""

from __future__ import annotations

from typing import Any

__all__ = ["build_app", "launch"]


def __getattr__(name: str) -> Any:
    # gradio loads only when the demo is built, not when a submodule such as ``web.state`` is imported
    if name in __all__:
        from . import demo

        return getattr(demo, name)
    raise AttributeError(f"module 'chatharuhi.web' has no attribute {name!r}")
