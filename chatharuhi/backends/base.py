"""The backend contract: one required method, ``stream(messages, **options) -> Iterator[str]``.

A blocking reply is the join of the stream; the async twin runs the stream in a worker thread
unless a backend overrides it. A backend that learns how a reply ended (the upstream's finish reason,
its token usage) reports it through ``stream_with_info``; the default reports nothing. A backend also says how it counts tokens and how large its
context window is, so the packer can fill the prompt exactly.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator, Sequence

from ..config import DEFAULT_CONTEXT_WINDOW
from ..tokens import TiktokenCounter, TokenCounter
from ..types import Message

_DONE = object()


@dataclass
class StreamInfo:
    """How a streamed reply ended, as far as the backend knows: filled when the stream is exhausted.

    ``finish_reason``: ``"stop"``, ``"length"`` (cut at ``max_tokens``), ... or None when unknown;
    ``usage``: the upstream's own ``prompt_tokens``/``completion_tokens``/``total_tokens``, or None."""

    finish_reason: str | None = None
    usage: dict[str, int] | None = None


class Backend(ABC):
    """A language model that streams a reply to a list of chat messages."""

    name: str = "backend"
    context_window: int = DEFAULT_CONTEXT_WINDOW
    # Budget defaults this backend prefers (story_tokens, history_tokens, reply_reserve); arguments win.
    budget_hint: dict[str, int] = {}

    @abstractmethod
    def stream(self, messages: Sequence[Message], **options: Any) -> Iterator[str]:
        """Yield the reply in chunks. Options: temperature, max_tokens, stop (list of strings)."""

    def stream_with_info(self, messages: Sequence[Message], info: StreamInfo, **options: Any) -> Iterator[str]:
        """``stream``, filling ``info`` when it ends; backends that know nothing more leave it empty."""
        return self.stream(messages, **options)

    def complete(self, messages: Sequence[Message], **options: Any) -> str:
        """The whole reply: the join of the stream."""
        return "".join(self.stream(messages, **options))

    async def astream(self, messages: Sequence[Message], **options: Any) -> AsyncIterator[str]:
        """Async twin of ``stream``: runs the blocking stream in a worker thread."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def pump() -> None:
            try:
                for chunk in self.stream(messages, **options):
                    if stop.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)
            except BaseException as exc:  # handed to the consumer, raised there
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        worker = threading.Thread(target=pump, daemon=True)
        worker.start()
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()

    def astream_with_info(self, messages: Sequence[Message], info: StreamInfo, **options: Any) -> AsyncIterator[str]:
        """Async twin of ``stream_with_info``; the default reports nothing."""
        return self.astream(messages, **options)

    async def acomplete(self, messages: Sequence[Message], **options: Any) -> str:
        """Async twin of ``complete``."""
        return "".join([chunk async for chunk in self.astream(messages, **options)])

    def token_counter(self) -> TokenCounter:
        """The counter that matches what this backend is sent (tiktoken unless overridden)."""
        return TiktokenCounter()

    def close(self) -> None:
        """Release connections or model memory; the default does nothing."""
