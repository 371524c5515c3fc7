"""One thread per model that runs jobs one at a time from a queue; each job streams into a queue of its own.

A model can run one generation at a time (a PEFT model's active adapter is global state of the model).
A lock held inside a generator would tie the model to whoever holds the generator: a consumer that
pauses (a slow client, a Gradio tab) blocks every other caller, and a generator resumed on another
thread (the server and Gradio do that) would release the lock from a thread that does not own it.
Instead the model's own thread runs each job to its end, writing its chunks into the job's buffer,
and callers only read that buffer: from any thread (``results``) or from an event loop without a
thread (``aresults``). No lock is held while a caller holds a generator.

The policy, in order: jobs run in the order they were submitted; a job whose consumer pauses keeps
running and its chunks wait in its buffer (the next job starts when it finishes, never later); a
consumer that stops reading (closes the generator, or drops it) cancels its job, which ``work`` sees
in ``job.cancelled`` and ends promptly; an exception in ``work`` reaches that job's consumer and the
thread goes on with the next job. A consumer gets ``BackendTimeout`` when the thread has made no
progress (no chunk of any job) for ``stall_s`` seconds.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import Any, AsyncIterator, Callable, Iterator

from ...errors import BackendError, BackendTimeout

_DONE = object()
_POLL_S = 1.0  # how often a waiting consumer checks that the thread still makes progress


def _unwrap(item: Any) -> Any:
    """A chunk as the consumer gets it: an exception from the job is raised in the consumer."""
    if isinstance(item, BaseException):
        raise item
    return item


class Job:
    """One request: the ``work`` that runs on the serial thread, its consumer's buffer, a cancel flag, its stats."""

    def __init__(self, serial: "Serial", work: Callable[["Job"], None],
                 loop: asyncio.AbstractEventLoop | None = None, stats: dict[str, Any] | None = None):
        self.work, self.serial, self.loop = work, serial, loop
        self.cancelled = threading.Event()
        self.stats: dict[str, Any] = {} if stats is None else stats
        self.error: BaseException | None = None  # set when the job is ended for its consumer (the backend closed)
        self.submitted = time.monotonic()
        self._out: Any = asyncio.Queue() if loop is not None else queue.Queue()

    def put(self, item: Any) -> None:
        """Hand a chunk (or the end marker, or an exception) to the consumer; a closed event loop cancels the job."""
        self.serial.beat = time.monotonic()
        if self.loop is None:
            self._out.put(item)
            return
        try:
            self.loop.call_soon_threadsafe(self._out.put_nowait, item)
        except RuntimeError:  # the consumer's event loop is closed: nobody will read this job
            self.cancelled.set()

    def cancel(self) -> None:
        """Stop the job: skipped if still queued, ended at its next check if running."""
        self.cancelled.set()


class Serial:
    """A thread that runs submitted jobs one at a time, in order (started on first use)."""

    def __init__(self, label: str, stall_s: float):
        self.label, self.stall_s = label, stall_s
        self.beat = time.monotonic()  # the last time the thread made progress
        self.current: Job | None = None
        self._jobs: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()  # only around starting the thread, never held by a consumer
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once ``close()`` ran."""
        return self._closed

    def pending(self) -> int:
        """Jobs waiting for the thread (not counting the one it runs)."""
        return self._jobs.qsize()

    def submit(self, work: Callable[[Job], None], loop: asyncio.AbstractEventLoop | None = None,
               stats: dict[str, Any] | None = None) -> Job:
        """Queue ``work(job)``; read its chunks with ``results(job)`` or, from ``loop``, ``aresults(job)``."""
        if self._closed:
            raise BackendError(f"{self.label}: the backend was closed")
        job = Job(self, work, loop, stats)
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=f"chatharuhi-serial-{self.label}",
                                                daemon=True)
                self._thread.start()
        self._jobs.put(job)
        return job

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` on the thread, between jobs, and return its result (inline when already on the thread)."""
        if threading.current_thread() is self._thread:
            return fn()
        result: list[Any] = []
        job = self.submit(lambda job: result.append(fn()))
        for _ in self.results(job):
            pass
        return result[0]

    def results(self, job: Job) -> Iterator[Any]:
        """The chunks of ``job``; closing (or dropping) this generator cancels the job."""
        try:
            while True:
                try:
                    item = job._out.get(timeout=min(_POLL_S, self.stall_s))
                except queue.Empty:
                    self._check_stall(job)
                    continue
                if item is _DONE:
                    return
                yield _unwrap(item)
        finally:
            job.cancel()

    async def aresults(self, job: Job) -> AsyncIterator[Any]:
        """Async twin of ``results`` for a job submitted with this event loop: no thread waits for it."""
        try:
            while True:
                try:
                    item = job._out.get_nowait()
                except asyncio.QueueEmpty:
                    try:
                        item = await asyncio.wait_for(job._out.get(), min(_POLL_S, self.stall_s))
                    except asyncio.TimeoutError:
                        self._check_stall(job)
                        continue
                if item is _DONE:
                    return
                yield _unwrap(item)
        finally:
            job.cancel()

    def _check_stall(self, job: Job) -> None:
        thread = self._thread
        if self._closed and (thread is None or not thread.is_alive()):
            raise BackendError(f"{self.label}: the backend was closed before this request started")
        silent = time.monotonic() - max(self.beat, job.submitted)
        if silent > self.stall_s:
            job.cancel()
            raise BackendTimeout(
                f"{self.label}: the generation thread made no progress for {silent:.0f} s (limit {self.stall_s:g} s); "
                "it may be stuck in the model: restart the program (raise timeout= for very slow prompts)")

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            self._run(job)
            del job  # an idle thread must not keep the last job's work (and through it the model) alive

    def _run(self, job: Job) -> None:
        if self._closed:
            job.put(BackendError(f"{self.label}: the backend was closed before this request started"))
            return
        if job.cancelled.is_set():  # its consumer left while it waited
            return
        self.current, self.beat = job, time.monotonic()
        try:
            job.work(job)
            job.put(job.error if job.error is not None else _DONE)
        except BaseException as exc:  # handed to the job's consumer, raised there; the thread goes on
            job.put(job.error if job.error is not None else exc)
        finally:
            self.current, self.beat = None, time.monotonic()

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new jobs; end the running one at its next check and the queued ones (with ``BackendError``)."""
        self._closed = True
        job = self.current
        if job is not None:
            job.error = BackendError(f"{self.label}: the backend was closed during this request")
            job.cancel()
        self._jobs.put(None)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)


class Chunks:
    """A job's chunks as an iterator any thread may resume; ``close()`` (or dropping it) cancels the job, and
    ``stats`` fills as the job runs. The wrapped generator must not refer back to this object: then dropping it
    closes the generator (and cancels the job) at once, not at the next cyclic garbage collection."""

    def __init__(self, chunks: Iterator[str], stats: dict[str, Any]):
        self.stats, self._chunks = stats, chunks

    def __iter__(self) -> "Chunks":
        return self

    def __next__(self) -> str:
        return next(self._chunks)

    def close(self) -> None:
        """Stop early: the model stops after its current token and the next queued job starts."""
        self._chunks.close()
