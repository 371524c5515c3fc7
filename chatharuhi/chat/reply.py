"""A streamed reply and the plan it answers: iterate for chunks; the turn is committed on completion.

A ``Reply`` is given what it needs (the backend, a reply filter, a commit callback) and knows nothing of the
chatbot that made it: a failed or abandoned stream commits nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter
from typing import Any, AsyncIterator, Callable, Iterator

from ..backends.base import Backend, StreamInfo
from ..options import strict
from ..prompting.postprocess import PassThrough
from ..types import Message, Trace


@strict
@dataclass
class Plan:
    """Everything decided before the model is called: the messages and why they look that way."""

    messages: list[Message]
    trace: Trace
    user_role: str
    text: str


@strict
class Reply:
    """A streamed reply: iterate it (or ``async for``) for chunks; ``text()`` joins it. Committed on completion."""

    def __init__(self, backend: Backend, plan: Plan, options: dict[str, Any], *,
                 filter: Callable[[], Any] = PassThrough, commit: Callable[[Plan, str], None] | None = None):
        """``filter``: makes the reply filter for one streaming; ``commit(plan, text)``: called once the whole
        reply is in (None: nothing is kept, e.g. a turn on a caller's own history)."""
        self.backend, self.plan, self.options = backend, plan, options
        self._new_filter, self._commit = filter, commit
        self.info = StreamInfo()  # filled by the backend when the stream ends
        self.first_chunk_ms: float | None = None  # from asking the backend to its first chunk (a server's timing)
        self._text: str | None = None
        self._started = False
        self._cut_by_filter = False

    @property
    def trace(self) -> Trace:
        """The packing trace of this turn."""
        return self.plan.trace

    @property
    def started(self) -> bool:
        """Whether the reply has begun streaming (a reply streams once; a finished one replays)."""
        return self._started

    @property
    def done(self) -> bool:
        """Whether the whole reply is in (and was handed to the commit callback)."""
        return self._text is not None

    def __iter__(self) -> Iterator[str]:
        if self._text is not None:  # replay a finished reply
            yield self._text
            return
        filt = self._begin()
        asked = perf_counter()
        stream = self.backend.stream(self.plan.messages, info=self.info, **self.options)
        try:
            for chunk in stream:
                self._arrived(asked)
                if out := filt.feed(chunk):
                    yield out
                if filt.stopped:
                    self._cut_by_filter = True
                    break
            if tail := filt.finish():
                yield tail
        finally:  # also runs when the consumer stops early: then nothing is committed
            close = getattr(stream, "close", None)
            if close:
                close()
            self._record(getattr(stream, "stats", None))
        self._finish(filt)

    async def __aiter__(self) -> AsyncIterator[str]:
        """Stream on the event loop through the backend's async twin (no thread per chunk); same commit rule."""
        if self._text is not None:
            yield self._text
            return
        filt = self._begin()
        asked = perf_counter()
        stream = self.backend.astream(self.plan.messages, info=self.info, **self.options)
        try:
            async for chunk in stream:
                self._arrived(asked)
                if out := filt.feed(chunk):
                    yield out
                if filt.stopped:
                    self._cut_by_filter = True
                    break
            if tail := filt.finish():
                yield tail
        finally:  # also runs when the consumer stops early: then nothing is committed
            aclose = getattr(stream, "aclose", None)
            if aclose:
                await aclose()
            self._record(getattr(stream, "stats", None))
        self._finish(filt)

    def _arrived(self, asked: float) -> None:
        """Note when the backend's first chunk came (``asked``: when it was asked)."""
        if self.first_chunk_ms is None:
            self.first_chunk_ms = (perf_counter() - asked) * 1e3

    def _begin(self) -> Any:
        """Mark the reply as streaming (once only) and return a fresh reply filter."""
        if self._started:
            raise RuntimeError("this reply is already being streamed")
        self._started = True
        return self._new_filter()

    def _finish(self, filt: Any) -> None:
        """Keep the finished text and hand it to the commit callback; a reply cut at ``max_tokens`` is kept up to
        its last sentence or word end, never mid-word (``finish_reason`` still says ``"length"``)."""
        from ..prompting.postprocess import trim_cut_reply

        self._text = filt.text
        if self.finish_reason == "length":
            self._text = trim_cut_reply(self._text) or self._text
        if self._commit is not None:
            self._commit(self.plan, self._text)

    @property
    def finish_reason(self) -> str:
        """Why the reply ended: the backend's reason (``"length"`` for a reply cut at ``max_tokens``), else
        ``"stop"`` (also when the reply filter ended it at another speaker's line)."""
        if self._cut_by_filter:
            return "stop"
        return self.info.finish_reason or "stop"

    @property
    def usage(self) -> dict[str, int] | None:
        """The backend's own token usage for this reply, when it reported one."""
        return self.info.usage

    def _record(self, stats: dict | None) -> None:
        """Copy what a local backend measured (KV-cache reuse, prefill time) into the trace."""
        if not stats or "reused_tokens" not in stats:
            return
        trace = self.plan.trace
        trace.reused_tokens = stats["reused_tokens"]
        trace.model_prompt_tokens = stats.get("prompt_tokens")
        for key in ("prefill", "first_token"):
            if f"{key}_s" in stats:
                trace.timings_ms[key] = round(stats[f"{key}_s"] * 1000, 1)

    def text(self) -> str:
        """The whole reply (streams it if it has not been consumed yet)."""
        if self._text is None:
            for _ in self:
                pass
        return self._text or ""

    async def atext(self) -> str:
        """Async twin of ``text``."""
        if self._text is None:
            async for _ in self:
                pass
        return self._text or ""

    def __str__(self) -> str:
        return self.text()
