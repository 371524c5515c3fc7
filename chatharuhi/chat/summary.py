"""The rolling summary of what left the history window (``summarize=True``), written in the background.

Once ``MEMORY_SUMMARY_EVERY`` turns have left the window since the last summary, the backend is asked, in a
daemon thread, to fold them into the summary so far. A reply never waits for it: the newest finished summary is
what the next prompt gets. A call that fails is skipped, and one still running after
``MEMORY_SUMMARY_TIMEOUT_S`` is given up (its late answer is dropped); either way the next turn's trace says so
and a later turn tries again.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Callable, Sequence

from ..config import MEMORY_SUMMARY_EVERY, MEMORY_SUMMARY_TIMEOUT_S, MEMORY_SUMMARY_TOKENS
from ..prompting.templates import load_template
from ..types import Message

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..prompting.tokens import TokenCounter
    from .memory import Entry

SUMMARY_INPUT_TOKENS = 2000  # the newest lines that left the window, at most, sent with the summary so far


class Summarizer:
    """Starts a summary call when enough turns left the window; hands the result (or a note) to callbacks."""

    def __init__(self, backend: "Backend", counter: "TokenCounter", language: str, names: tuple[str, str], *,
                 on_summary: Callable[[str, int], None], on_note: Callable[[str], None],
                 every: int = MEMORY_SUMMARY_EVERY, timeout: float = MEMORY_SUMMARY_TIMEOUT_S,
                 max_tokens: int = MEMORY_SUMMARY_TOKENS):
        """``names``: the character's and the user's, as the summary should call them."""
        self.backend, self.counter, self.names = backend, counter, names
        self.on_summary, self.on_note = on_summary, on_note
        self.every, self.timeout, self.max_tokens = every, timeout, max_tokens
        self.instruction = load_template("memory_summarize", language)
        self.request = load_template("memory_summarize_request", language)
        self._job: tuple[int, float] | None = None  # (job number, start time) of the call in flight
        self._jobs = 0
        self._lock = threading.Lock()
        self.thread: threading.Thread | None = None  # the newest job's thread (tests join it)

    def maybe_start(self, entries: Sequence["Entry"], upto: int, window_start: int, previous: str | None) -> bool:
        """Start a summary of entries ``upto``..``window_start`` if there are ``every`` of them and none is running."""
        self.check()
        if window_start - upto < self.every:
            return False
        with self._lock:
            if self._job is not None:
                return False
            self._jobs += 1
            self._job = (self._jobs, time.monotonic())
            number = self._jobs
        messages = self._messages([e.text for e in entries[upto:window_start]], previous)
        self.thread = threading.Thread(target=self._run, args=(number, messages, window_start),
                                       name="chatharuhi-summary", daemon=True)
        self.thread.start()
        return True

    def _messages(self, lines: list[str], previous: str | None) -> list[Message]:
        kept, used = [], 0
        for text in reversed(lines):  # the newest lines first, up to the input budget
            used += self.counter.count(text)
            if kept and used > SUMMARY_INPUT_TOKENS:
                break
            kept.append(text)
        character, user = self.names
        system = self.instruction.render(character=character, user=user, tokens=self.max_tokens)
        request = self.request.render(previous=(previous or "").strip() or "-", lines="\n".join(reversed(kept)))
        return [Message("system", system), Message("user", request)]

    def _run(self, number: int, messages: list[Message], upto: int) -> None:
        try:
            options = {"max_tokens": self.max_tokens} if self._honours("max_tokens") else {}
            text = self.backend.complete(messages, **options).strip()
            if not text:
                raise ValueError("the backend answered with nothing")
        except Exception as exc:  # noqa: BLE001 - a summary is optional: any failure is a note, never a crash
            if self._finish(number):
                self.on_note(f"the rolling summary was skipped: {type(exc).__name__}: {exc}"[:300])
            return
        if self._finish(number):
            self.on_summary(text, upto)

    def _honours(self, option: str) -> bool:
        declared = self.backend.call_options
        return declared is None or option in declared

    def _finish(self, number: int) -> bool:
        """End job ``number``; False if it was given up meanwhile, or ran past the timeout (its answer is dropped)."""
        with self._lock:
            if self._job is None or self._job[0] != number:
                return False
            late = time.monotonic() - self._job[1] >= self.timeout
            self._job = None
        if late:
            self.on_note(f"the rolling summary was skipped: the backend did not answer within {self.timeout:g} s")
        return not late

    def check(self) -> None:
        """Give up a call that has run past the timeout (with a note); a later turn starts another."""
        with self._lock:
            if self._job is None or time.monotonic() - self._job[1] < self.timeout:
                return
            self._job = None
        self.on_note(f"the rolling summary was skipped: the backend did not answer within {self.timeout:g} s")

    @property
    def running(self) -> bool:
        """Whether a summary call is in flight."""
        with self._lock:
            return self._job is not None
