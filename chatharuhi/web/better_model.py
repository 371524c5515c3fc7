"""The demo's way to a real model: one line saying what the tiny embedded model cannot do, and a "Get a better
model" button that pulls the recommended model (resumable, with a progress bar) and switches to it at once.

The pull is ``chatharuhi models pull`` (``models/download.py``: sha256-checked, resumed from ``.partial/``
after an interruption); it runs in a thread while the handler reports its bytes from the partial file. When
it is done the demo's backend becomes that model, the chatbots are rebuilt on it, and a restart picks it too
(the largest pulled model is the default when nothing is configured).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator

from ..config import RECOMMENDED_MODEL
from ..errors import ChatHaruhiError, InputError
from .render import literal
from .state import View

PROGRESS_POLL_S = 0.25  # how often the progress bar is updated while a pull runs


class BetterModel:
    """Offers and runs the pull of ``name`` (the recommended Apache-2.0 model) for one demo.

    ``backend``: returns the backend that answers now; ``switch``: the demo answers with the pulled model from
    now on; ``backend_info``: the settings panel's line about the backend, shown again after the switch."""

    def __init__(self, backend: Callable[[], Any], switch: Callable[[str], None], backend_info: Callable[[], str],
                 name: str = RECOMMENDED_MODEL):
        self.backend, self.switch, self.backend_info, self.name = backend, switch, backend_info, name
        self._lock = threading.Lock()
        self._running = False

    def entry(self):
        """The catalogue entry of the model on offer."""
        from ..models.catalog import find_model

        return find_model(self.name)

    def offered(self) -> bool:
        """Whether the demo runs the embedded model (or one that cannot speak a character's language)."""
        from ..models.catalog import BUILTIN

        entry = self.backend().model_entry
        return entry is not None and entry.name == BUILTIN.name

    def line(self) -> str:
        """The model line at the top of the page: what answers and, on the tiny model, what a real one changes."""
        from ..models.selection import describe
        from ..models.store import format_size

        line = f"Model: {literal(describe(self.backend()))}"
        if not self.offered():
            return line
        e = self.entry()
        return (f"{line} — a 135M-parameter demo model: short English replies that drift and repeat, and no "
                f"Chinese. **{literal(e.title)}** ({format_size(e.size)}, licence {literal(e.licence)}, runs on this "
                f"CPU) {literal(_speaks(e.languages))} and stays in character: press **Get a better model**.")

    def pull(self) -> Iterator[View]:
        """Pull the model (a progress bar while it downloads), then switch the demo to it."""
        from ..models.download import pull_model
        from ..models.store import format_size, installed

        if not self.offered():
            yield {"model_line": self.line(), "pull_progress": "", "better_visible": False,
                   "status": "a better model is already in use"}
            return
        with self._lock:
            if self._running:
                raise InputError("the model is already being downloaded (in another tab?): wait for it to finish")
            self._running = True
        try:
            entry = self.entry()
            done: dict[str, Any] = {}

            def run() -> None:
                try:
                    done["path"] = pull_model(entry.name, progress=False, log=None)
                except BaseException as exc:  # noqa: BLE001 - handed to the handler, which reports it
                    done["error"] = exc

            worker = threading.Thread(target=run, name="chatharuhi-pull", daemon=True)
            resumed = _got(entry, 0) if installed(entry) is None else 0
            worker.start()
            total = entry.size or 0
            note = f" (resuming at {format_size(resumed)})" if resumed else ""
            while worker.is_alive():
                got = _got(entry, total)
                yield {"pull_progress": progress_bar(got, total, f"Downloading {entry.title}{note}"),
                       "status": f"downloading {literal(entry.name)}: the chat keeps working meanwhile"}
                worker.join(PROGRESS_POLL_S)
            if "error" in done:
                error = done["error"]
                got = _got(entry, 0)
                kept = f"; {format_size(got)} are kept: press the button again to resume" if got else ""
                message = str(error) if isinstance(error, ChatHaruhiError) else f"{type(error).__name__}: {error}"
                yield {"pull_progress": progress_bar(got, total, "Download stopped"),
                       "status": f"⚠ the download stopped: {literal(message)}{kept}"}
                return
            yield {"pull_progress": progress_bar(total, total, f"{entry.title}: downloaded and checked"),
                   "status": f"loading {literal(entry.name)}…"}
            self.switch(entry.name)
            yield {"model_line": self.line(), "better_visible": False, "backend_info": self.backend_info(),
                   "pull_progress": progress_bar(total, total, f"Now chatting with {entry.title}"),
                   "status": f"switched to {literal(entry.title)}: your next message is answered by it (no restart; "
                             "it stays the default next time)"}
        finally:
            with self._lock:
                self._running = False


LANGUAGE_NAMES = {"zh": "Chinese", "en": "English", "ja": "Japanese", "ko": "Korean", "fr": "French", "de": "German"}


def _speaks(languages: tuple[str, ...]) -> str:
    """``speaks Chinese, English and 11 more`` from language codes."""
    named = [LANGUAGE_NAMES.get(code, code) for code in languages[:2]]
    more = f" and {len(languages) - 2} more" if len(languages) > 2 else ""
    return "speaks " + (" and ".join(named) if not more else ", ".join(named) + more) if named else "is larger"


def _got(entry, total: int) -> int:
    """Bytes downloaded so far (the partial files may be renamed into place while we look)."""
    from ..models.store import installed, partial_bytes

    try:
        return partial_bytes(entry.name) if installed(entry) is None else total
    except OSError:
        return total


def progress_bar(done: int, total: int, label: str) -> str:
    """A progress bar as HTML the page shows (our own markup; the label is escaped)."""
    from ..models.store import format_size

    share = min(1.0, done / total) if total else 0.0
    return (f'<div class="pull-progress"><progress value="{done}" max="{max(total, 1)}"></progress> '
            f"<span>{literal(label)}: {100 * share:.0f} % ({format_size(done)} of {format_size(total)})"
            "</span></div>")
