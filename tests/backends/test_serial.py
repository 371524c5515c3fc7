"""The serial queue that runs one model's jobs one at a time on its own thread (no model needed here)."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

import pytest

from chatharuhi.backends.transformers.serial import Job, Serial
from chatharuhi.errors import BackendError, BackendTimeout
from helpers.waiting import WAIT_S, in_thread, wait_until


def words(*chunks: str, log: list | None = None, name: str = ""):
    """A job that emits ``chunks`` and notes when it starts and ends."""

    def work(job: Job) -> None:
        if log is not None:
            log.append(("start", name))
        for chunk in chunks:
            job.put(chunk)
        if log is not None:
            log.append(("end", name))

    return work


def until_cancelled(counter: list[int]):
    """A job that emits chunks until its consumer leaves (counting them)."""

    def work(job: Job) -> None:
        while not job.cancelled.is_set() and counter[0] < 100_000:
            counter[0] += 1
            job.put(f"{counter[0]} ")
            time.sleep(0.001)

    return work


def gated(serial: Serial) -> threading.Event:
    """Hold the serial thread with a job that waits for the returned event."""
    gate, started = threading.Event(), threading.Event()

    def work(job: Job) -> None:
        started.set()
        gate.wait(WAIT_S)

    serial.submit(work)
    assert started.wait(WAIT_S)
    return gate


@pytest.fixture
def serial():
    s = Serial("test", stall_s=60)
    yield s
    s.close()


def test_jobs_run_one_at_a_time_in_order(serial):
    log: list = []
    jobs = [serial.submit(words("a", "b", log=log, name=str(i))) for i in range(5)]
    for job in jobs:
        assert list(serial.results(job)) == ["a", "b"]
    assert log == [(event, str(i)) for i in range(5) for event in ("start", "end")]


def test_many_threads_each_get_their_own_chunks(serial):
    def ask(i):
        return "".join(serial.results(serial.submit(words(*(f"{i}.{k} " for k in range(20))))))

    runs = [in_thread(ask, i) for i in range(8)]
    for i, (thread, result, errors) in enumerate(runs):
        thread.join(WAIT_S)
        assert not errors and result == ["".join(f"{i}.{k} " for k in range(20))]


def test_a_paused_consumer_does_not_hold_up_the_next_job(serial):
    first = serial.results(serial.submit(words("1", "2", "3")))
    assert next(first) == "1"  # ...and this consumer pauses
    thread, result, errors = in_thread(lambda: list(serial.results(serial.submit(words("x", "y")))))
    thread.join(WAIT_S)
    assert not thread.is_alive() and not errors and result == [["x", "y"]]
    assert list(first) == ["2", "3"]  # the paused consumer reads its buffer later


def test_a_generator_resumes_on_another_thread_while_a_third_call_waits(serial):
    stream = {}
    thread_a, _, errors_a = in_thread(lambda: stream.setdefault("g", serial.results(serial.submit(words("a", "b")))))
    thread_a.join(WAIT_S)
    gate = gated(serial)
    thread_c, result_c, errors_c = in_thread(lambda: list(serial.results(serial.submit(words("c")))))
    wait_until(lambda: serial.pending() == 1, "C's job is queued")
    thread_b, result_b, errors_b = in_thread(lambda: list(stream["g"]))
    thread_b.join(WAIT_S)
    assert not thread_b.is_alive() and result_b == [["a", "b"]]
    assert thread_c.is_alive() and serial.pending() == 1  # C still waits behind the gate
    gate.set()
    thread_c.join(WAIT_S)
    assert result_c == [["c"]] and not (errors_a or errors_b or errors_c)


def test_closing_the_generator_cancels_the_job(serial):
    counter = [0]
    chunks = serial.results(serial.submit(until_cancelled(counter)))
    next(chunks)
    chunks.close()
    assert list(serial.results(serial.submit(words("next")))) == ["next"]
    assert counter[0] < 100_000


def test_a_dropped_generator_cancels_the_job(serial):
    counter = [0]
    chunks = serial.results(serial.submit(until_cancelled(counter)))
    next(chunks)
    del chunks  # the consumer vanished without closing
    gc.collect()
    assert list(serial.results(serial.submit(words("next")))) == ["next"]
    assert counter[0] < 100_000


def test_a_job_cancelled_while_queued_never_runs(serial):
    gate = gated(serial)
    ran = []
    job = serial.submit(lambda job: ran.append(job))
    chunks = serial.results(job)
    job.cancel()
    chunks.close()
    gate.set()
    assert list(serial.results(serial.submit(words("after")))) == ["after"]
    assert ran == []


def test_an_error_reaches_its_caller_and_the_thread_goes_on(serial):
    def boom(job: Job) -> None:
        job.put("partial")
        raise BackendError("model: out of memory")

    chunks = serial.results(serial.submit(boom))
    assert next(chunks) == "partial"
    with pytest.raises(BackendError, match="out of memory"):
        next(chunks)
    assert list(serial.results(serial.submit(words("ok")))) == ["ok"]


def test_call_runs_on_the_thread_and_raises_there(serial):
    names = serial.call(lambda: threading.current_thread().name)
    assert names == "chatharuhi-serial-test"
    assert serial.call(lambda: serial.call(lambda: 42)) == 42  # nested: inline, no deadlock
    with pytest.raises(ZeroDivisionError):
        serial.call(lambda: 1 / 0)
    assert serial.call(lambda: "alive") == "alive"


def test_close_ends_running_and_queued_jobs_with_an_error():
    serial = Serial("closing", stall_s=60)
    counter = [0]
    running = serial.results(serial.submit(until_cancelled(counter)))
    next(running)
    queued = serial.results(serial.submit(words("never")))
    serial.close()
    with pytest.raises(BackendError, match="closed during"):
        list(running)
    with pytest.raises(BackendError, match="closed before"):
        list(queued)
    with pytest.raises(BackendError, match="closed"):
        serial.submit(words("late"))


def test_a_stuck_thread_is_a_timeout_not_a_hang():
    serial = Serial("stuck", stall_s=0.3)
    gate = gated(serial)
    try:
        with pytest.raises(BackendTimeout, match="no progress"):
            list(serial.results(serial.submit(words("x"))))
    finally:
        gate.set()
        serial.close()


def test_async_results_wait_on_the_event_loop(serial):
    async def main():
        gate = await asyncio.to_thread(gated, serial)
        threads = set(threading.enumerate())
        job = serial.submit(words("春", "日"), loop=asyncio.get_running_loop())
        got, ticks = [], 0

        async def consume():
            async for chunk in serial.aresults(job):
                got.append(chunk)

        task = asyncio.create_task(consume())
        for _ in range(10):  # the loop keeps running while the job waits behind the gate
            await asyncio.sleep(0.01)
            ticks += 1
        assert not set(threading.enumerate()) - threads  # no thread was started to wait for the chunks
        gate.set()
        await asyncio.wait_for(task, WAIT_S)
        return got, ticks

    got, ticks = asyncio.run(main())
    assert got == ["春", "日"] and ticks == 10


def test_async_close_cancels_the_job(serial):
    counter = [0]

    async def main():
        chunks = serial.aresults(serial.submit(until_cancelled(counter), loop=asyncio.get_running_loop()))
        await chunks.__anext__()
        await chunks.aclose()

    asyncio.run(main())
    assert list(serial.results(serial.submit(words("next")))) == ["next"]
    assert counter[0] < 100_000


def test_a_job_whose_event_loop_closed_does_not_wedge_the_queue(serial):
    counter = [0]
    loop = asyncio.new_event_loop()
    gate = gated(serial)
    serial.submit(until_cancelled(counter), loop=loop)  # its consumer never reads, and its loop goes away
    loop.close()
    gate.set()
    assert list(serial.results(serial.submit(words("next")))) == ["next"]
    assert counter[0] == 1  # the first chunk found the loop closed: the job was cancelled
