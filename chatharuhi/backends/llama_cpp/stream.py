"""A reply streaming from the llama.cpp worker (for ``backend.py``): the request on the child it was sent to,
the server's own figures when it ends, and what a failure means (a crash, a hang) for that child.
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterator

from ...errors import BackendError
from ..base import StreamInfo

if TYPE_CHECKING:
    from .backend import LlamaCppBackend


def _record(stats: dict[str, Any], info: StreamInfo, started: float) -> None:
    """The server's own figures for this reply, under the names the chatbot's trace reads."""
    t = info.timings or {}
    if "cache_n" in t:
        stats.update(reused_tokens=int(t["cache_n"]), prefill_tokens=int(t.get("prompt_n", 0)),
                     prompt_tokens=int(t["cache_n"]) + int(t.get("prompt_n", 0)),
                     prefill_s=float(t.get("prompt_ms", 0.0)) / 1e3, decode_tokens=int(t.get("predicted_n", 0)),
                     decode_s=float(t.get("predicted_ms", 0.0)) / 1e3)
    stats["finish_reason"] = info.finish_reason
    stats["total_s"] = perf_counter() - started


def chunks(backend: "LlamaCppBackend", body: list, options: dict, prefill: str, stats: dict[str, Any],
           info: StreamInfo) -> Iterator[str]:
    """The reply's chunks (the prefill first); the worker's request ends when this generator does."""
    started = perf_counter()
    child = backend.worker.acquire()
    stage = "reading the prompt"
    try:
        if prefill:
            yield prefill
        stream = child.wire.stream(body, info=info, **options)
        try:
            for piece in stream:
                if stage != "generating":
                    stage, stats["first_token_s"] = "generating", perf_counter() - started
                yield piece
        finally:
            stream.close()
        _record(stats, info, started)
    except BackendError as exc:
        raise backend._failure(child, exc, stage) from None
    finally:
        backend.worker.release(child)


async def achunks(backend: "LlamaCppBackend", body: list, options: dict, prefill: str, stats: dict[str, Any],
                  info: StreamInfo) -> AsyncIterator[str]:
    """Async twin of ``chunks``, on the event loop."""
    started = perf_counter()
    child = await asyncio.to_thread(backend.worker.acquire)  # may start a fresh worker
    stage = "reading the prompt"
    try:
        if prefill:
            yield prefill
        stream = child.wire.astream(body, info=info, **options)
        try:
            async for piece in stream:
                if stage != "generating":
                    stage, stats["first_token_s"] = "generating", perf_counter() - started
                yield piece
        finally:
            await stream.aclose()
        _record(stats, info, started)
    except BackendError as exc:
        raise await asyncio.to_thread(backend._failure, child, exc, stage) from None
    finally:
        backend.worker.release(child)


class Generation:
    """A reply being generated in the worker: iterate it (from any thread) for chunks; ``close()``, or dropping
    it, ends the request, and the server stops generating. ``stats`` holds the server's figures when it ends:
    prompt_tokens, reused_tokens (read from llama.cpp's prompt cache, not re-read), prefill_tokens, prefill_s,
    decode_tokens, decode_s, first_token_s, total_s, finish_reason, adapter.
    """

    def __init__(self, chunks: Iterator[str], stats: dict[str, Any]):
        self.stats, self._chunks = stats, chunks

    def __iter__(self) -> "Generation":
        return self

    def __next__(self) -> str:
        return next(self._chunks)

    def close(self) -> None:
        """Stop early: the HTTP request is closed, and the server frees the slot."""
        self._chunks.close()
