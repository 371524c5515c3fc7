"""Generation for the ``transformers`` backend: one job on the model's own thread, streamed to its caller.

``generation_work`` is what runs ``model.generate`` on the model's serial thread (``serial.Serial``)
with the job's adapter. A streamer decodes tokens as they come, cuts the reply at a stop string on
that thread (so generation ends there even when nobody is reading) and hands the text to the job's
buffer. A stopping criterion ends generation at the next token once the job is cancelled (its
consumer left, or the backend closed) or a stop string was seen. ``Generation`` and ``achunks`` are
the caller's side: a generator resumable from any thread, and its async twin for an event loop.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterator, Sequence

from ...errors import BackendError, ChatHaruhiError
from ..base import StreamInfo
from .serial import Chunks, Job, Serial

if TYPE_CHECKING:
    from .backend import TransformersBackend


@dataclass
class Request:
    """One generation, decided on the caller's thread before it is queued."""

    ids: list[int]
    max_new: int
    stop: list[str]
    adapter: str | None
    sampling: dict[str, Any]
    seed: int | None


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """(the part of ``text`` that is safe to emit, whether a stop string was found)."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    if hits:
        return text[: min(hits)], True
    hold = 0  # keep back a tail that could be the start of a stop string
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                hold = max(hold, n)
                break
    return text[: len(text) - hold], False


class _Halt:
    """A stopping criterion: true once ``should_stop()`` is (checked after every token)."""

    def __init__(self, torch: Any, should_stop: Callable[[], bool]):
        self.torch, self.should_stop = torch, should_stop

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        return self.torch.full((input_ids.shape[0],), self.should_stop(), dtype=self.torch.bool,
                               device=input_ids.device)


@functools.cache
def _streamer_class() -> type:
    """``JobStreamer``, a ``TextStreamer`` (imported lazily) that writes into a job instead of stdout."""
    from transformers import TextStreamer

    class JobStreamer(TextStreamer):
        """Decoded text goes to ``job``, cut at the first stop string; counts the generated tokens."""

        def __init__(self, tokenizer: Any, job: Job, stops: list[str]):
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.job, self.stops = job, stops
            self.pending, self.stopped, self.tokens = "", False, 0
            self.started = time.monotonic()

        def put(self, value: Any) -> None:
            prompt = self.skip_prompt and self.next_tokens_are_prompt
            super().put(value)
            if not prompt:
                if not self.tokens:
                    self.job.stats["first_token_s"] = time.monotonic() - self.started
                self.tokens += int(value.numel())
                self.job.serial.beat = time.monotonic()

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if self.stopped:
                return
            self.pending += text
            safe, self.stopped = cut_at_stop(self.pending, self.stops)
            if safe:
                self.job.put(safe)
            self.pending = "" if self.stopped else self.pending[len(safe):]
            if stream_end and self.pending:
                self.job.put(self.pending)
                self.pending = ""

    return JobStreamer


def generation_error(model_name: str, exc: BaseException) -> BackendError:
    """The typed error for an exception raised inside ``generate`` (out of memory gets its fixes)."""
    first = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return BackendError(f"{model_name}: out of memory while generating ({first}); send a shorter prompt, "
                            "lower max_tokens, or use a smaller model (on CUDA: quantization='4bit')")
    return BackendError(f"{model_name}: generation failed: {type(exc).__name__}: {first}")


def generation_work(backend: "TransformersBackend", request: Request) -> Callable[[Job], None]:
    """The job that runs ``request`` on the model's thread; its stats: queued_s, first_token_s,
    decode_tokens, total_s and finish_reason ("stop", "length", or "cancelled")."""

    def work(job: Job) -> None:
        from transformers import StoppingCriteriaList

        torch, stats, begun = backend.torch, job.stats, time.monotonic()
        stats["queued_s"] = begun - job.submitted
        streamer = _streamer_class()(backend.tokenizer, job, request.stop)
        halt = _Halt(torch, lambda: streamer.stopped or job.cancelled.is_set())
        model, tokenizer = backend.model, backend.tokenizer
        try:
            if model is None:
                raise BackendError(f"{backend.model_name}: the backend was closed")
            input_ids = torch.tensor([request.ids], device=model.device)
            if request.seed is not None:
                torch.manual_seed(request.seed)
            with torch.inference_mode(), backend._adapter_scope(request.adapter):
                model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                               max_new_tokens=request.max_new, streamer=streamer,
                               stopping_criteria=StoppingCriteriaList([halt]),
                               pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id, **request.sampling)
        except ChatHaruhiError:
            raise
        except Exception as exc:  # torch, peft and transformers raise RuntimeError, ValueError, OutOfMemoryError...
            raise generation_error(backend.model_name, exc) from exc
        finally:
            stats.update(decode_tokens=streamer.tokens, total_s=time.monotonic() - begun)
        stats["finish_reason"] = ("stop" if streamer.stopped else "cancelled" if job.cancelled.is_set()
                                  else "length" if streamer.tokens >= request.max_new else "stop")

    return work


def _chunks(serial: Serial, work: Callable[[Job], None], prefill: str, stats: dict[str, Any],
            info: StreamInfo | None) -> Iterator[str]:
    if prefill:
        yield prefill
    job = serial.submit(work, stats=stats)
    yield from serial.results(job)
    if info is not None:
        info.finish_reason = stats.get("finish_reason")


class Generation(Chunks):
    """A reply being generated on the model's thread: iterate it (from any thread) for chunks; ``close()``
    (or dropping it) cancels it. ``stats`` fills as it runs (see ``generation_work``)."""

    def __init__(self, serial: Serial, work: Callable[[Job], None], prefill: str, info: StreamInfo | None = None):
        stats: dict[str, Any] = {}
        super().__init__(_chunks(serial, work, prefill, stats, info), stats)


async def achunks(serial: Serial, work: Callable[[Job], None], prefill: str,
                  info: StreamInfo | None = None) -> AsyncIterator[str]:
    """The async twin of ``Generation``: chunks arrive on the running event loop, no thread waits for them."""
    if prefill:
        yield prefill
    stats: dict[str, Any] = {}
    job = serial.submit(work, loop=asyncio.get_running_loop(), stats=stats)
    async for chunk in serial.aresults(job):
        yield chunk
    if info is not None:
        info.finish_reason = stats.get("finish_reason")
