"""Which local model to use when none is named, the notice that says so, and the language warning."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from ..config import RECOMMENDED_MODEL
from .catalog import BUILTIN, ModelEntry, catalog
from .store import format_size, installed_models

if TYPE_CHECKING:
    from ..backends.base import Backend

logger = logging.getLogger("chatharuhi")
_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()

MODEL_HELP = ("a pulled local model (e.g. qwen2.5-1.5b: see `chatharuhi models list`), a .gguf path, or the "
              "backend's model name")  # the command line's --model


def default_pulled() -> ModelEntry | None:
    """The pulled model to use when nothing is configured: the largest one pulled, or None."""
    pulled = installed_models()
    return max(pulled, key=lambda i: i.size).entry if pulled else None


def _recommended() -> str:
    entry = catalog().get(RECOMMENDED_MODEL)
    size = f" ({format_size(entry.size)})" if entry else ""
    return f"`chatharuhi models pull {RECOMMENDED_MODEL}`{size}"


def pulled_notice(entry: ModelEntry) -> str:
    """The one-line notice when a pulled model is chosen because nothing was configured."""
    return (f"chatharuhi: no backend configured; using the pulled model {entry.name} ({entry.title}); "
            "others: `chatharuhi models list`, or set OPENAI_API_KEY / CHATHARUHI_BACKEND")


def embedded_notice() -> str:
    """The one-line notice when the embedded model is chosen because nothing was configured."""
    return (f"chatharuhi: no backend configured; using the embedded model {BUILTIN.name} (tiny, English only: "
            f"Chinese characters answer in gibberish); for a real model run {_recommended()}, "
            "or set OPENAI_API_KEY / CHATHARUHI_BACKEND")


def language_warning(language: str, entry: ModelEntry | None, character: str) -> str | None:
    """A one-line warning if ``entry`` is not meant to speak ``language``; logged once per pair."""
    if entry is None or not entry.languages or entry.speaks(language):
        return None
    key = (entry.name, language)
    with _warned_lock:
        if key in _warned:
            return None
        _warned.add(key)
    better = next((e.name for e in (catalog().get(RECOMMENDED_MODEL),) if e and e.speaks(language)), None)
    fix = (f"run `chatharuhi models pull {better}` and pass --model {better} (in Python: model={better!r})"
           if better else "use another model")
    message = (f"chatharuhi: {character} speaks {language} but the model {entry.name} only speaks "
               f"{', '.join(entry.languages)}; for replies in {language}, {fix}")
    logger.warning(message)
    return message


def model_line(backend: Backend, languages: "set[str] | list[str]" = ()) -> str:
    """The demo's "Model: ..." line; it adds what to pull when the model cannot speak some characters' language."""
    line = f"Model: {describe(backend)}"
    entry = backend.model_entry
    missing = sorted({lang for lang in languages if lang} - {lang for lang in languages if lang and entry
                                                             and entry.speaks(lang)}) if entry else []
    better = catalog().get(RECOMMENDED_MODEL)
    if missing and better is not None and all(better.speaks(lang) for lang in missing):
        line += (f" — it does not speak {', '.join(missing)}: for those characters run "
                 f"`chatharuhi models pull {better.name}` and start the demo with `--model {better.name}`")
    return line


def describe(backend: Backend) -> str:
    """A short human label of the model a backend runs, e.g. ``qwen2.5-3b (Qwen2.5-3B-Instruct Q4_K_M, local)``."""
    return backend.describe()
