"""The transformers backend's one generation at a time, on the model's own thread, under callers that pause,
hop threads, vanish or run on an event loop. A tiny random Llama with two real PEFT adapters (no downloads)."""

from __future__ import annotations

import asyncio
import threading

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

# The fixtures: a saved tiny base with two adapters, and a greedy backend holding both (holmes, haruhi).
from test_transformers import backend as backend  # noqa: E402,F401
from test_transformers import tiny as tiny  # noqa: E402,F401

from chatharuhi.backends.base import StreamInfo  # noqa: E402
from chatharuhi.backends.transformers import backend as transformers_backend  # noqa: E402
from chatharuhi.backends.transformers.backend import TransformersBackend  # noqa: E402
from chatharuhi.errors import AdapterError, BackendError  # noqa: E402
from helpers.tiny_llama import MESSAGES  # noqa: E402
from helpers.waiting import in_thread, wait_until  # noqa: E402

WAIT_S = 120  # generous bound for a thread to finish on a loaded 2-core machine (a failure, not a timing)
LONG = 1500  # far longer than a cancelled reply gets: the greedy tiny model ends none of these before ~900 tokens


@pytest.fixture(scope="module")
def expected(backend):
    """Each adapter's greedy reply, asked alone."""
    replies = {name: backend.complete(MESSAGES, max_tokens=24, adapter=name) for name in ("holmes", "haruhi")}
    assert replies["holmes"] != replies["haruhi"]
    return replies


@pytest.fixture
def jobs(monkeypatch) -> list:
    """Every job the backend queues from now on (an async stream does not expose its stats)."""
    seen: list = []
    real = transformers_backend.generation_work

    def spy(b, request):
        work = real(b, request)
        return lambda job: (seen.append(job), work(job))[1]

    monkeypatch.setattr(transformers_backend, "generation_work", spy)
    return seen


def gate(backend) -> threading.Event:
    """Hold the model's thread (as a long generation would) until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def hold():
        started.set()
        release.wait(WAIT_S)

    threading.Thread(target=backend._serial.call, args=(hold,), daemon=True).start()
    assert started.wait(WAIT_S)
    return release


def test_a_paused_consumer_does_not_block_another_caller(backend, expected):
    # With a lock held across yields, the second call would wait for the paused consumer forever.
    paused = backend.stream(MESSAGES, max_tokens=24, adapter="holmes")
    first = next(paused)
    thread, result, errors = in_thread(backend.complete, MESSAGES, max_tokens=24, adapter="haruhi")
    thread.join(WAIT_S)
    assert not thread.is_alive() and not errors, errors
    assert result == [expected["haruhi"]]
    assert paused.stats["finish_reason"] in ("stop", "length")  # it ran to its end into its buffer
    assert first + "".join(paused) == expected["holmes"]


def test_thread_hopping_generator_while_a_third_call_waits_in_the_queue(backend, expected):
    box = {}

    def start_on_a():
        box["g"] = backend.stream(MESSAGES, max_tokens=24, adapter="holmes")
        box["first"] = next(box["g"])

    thread_a, _, errors_a = in_thread(start_on_a)
    thread_a.join(WAIT_S)
    release = gate(backend)
    thread_c, result_c, errors_c = in_thread(backend.complete, MESSAGES, max_tokens=24, adapter="haruhi")
    wait_until(lambda: backend._serial.pending() == 1, "C's job is queued")
    thread_b, result_b, errors_b = in_thread(lambda: box["first"] + "".join(box["g"]))
    thread_b.join(WAIT_S)
    assert not thread_b.is_alive() and result_b == [expected["holmes"]], (result_b, errors_b)
    assert thread_c.is_alive() and backend._serial.pending() == 1  # C waits its turn behind the gate
    release.set()
    thread_c.join(WAIT_S)
    assert result_c == [expected["haruhi"]] and not (errors_a or errors_b or errors_c)


def test_many_threads_two_adapters_with_hops_and_abandoned_streams(backend, expected):
    got, errors, abandoned = [], [], []

    def caller(i):
        try:
            name = ("holmes", "haruhi")[i % 2]
            for turn in range(3):
                if (i + turn) % 3 == 2:  # abandon a long stream after one chunk
                    g = backend.stream(MESSAGES, max_tokens=LONG, adapter=name)
                    next(g)
                    abandoned.append(g.stats)
                    del g
                else:
                    got.append((name, backend.complete(MESSAGES, max_tokens=24, adapter=name)))
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert not errors, errors
    assert len(got) == 8 and all(text == expected[name] for name, text in got), got
    backend.complete(MESSAGES, max_tokens=1)  # queued after every abandoned job: they have all ended
    assert len(abandoned) == 4
    assert all(s["finish_reason"] == "cancelled" and s["decode_tokens"] < LONG for s in abandoned), abandoned


def test_closing_the_stream_stops_generation_and_the_next_job_runs(backend, expected):
    generation = backend.stream(MESSAGES, max_tokens=LONG, adapter="holmes")
    next(generation)
    generation.close()
    assert backend.complete(MESSAGES, max_tokens=24, adapter="haruhi") == expected["haruhi"]
    assert generation.stats["finish_reason"] == "cancelled" and generation.stats["decode_tokens"] < LONG


def test_a_stream_never_iterated_queues_nothing(backend):
    backend.stream(MESSAGES, max_tokens=LONG)
    assert backend._serial.pending() == 0 and backend._serial.current is None


def test_a_stop_string_ends_generation_on_the_models_thread(backend, expected):
    reply = expected["holmes"]
    stop = reply[len(reply) // 2: len(reply) // 2 + 2]
    generation = backend.stream(MESSAGES, max_tokens=LONG, adapter="holmes", stop=[stop])
    assert "".join(generation) == reply[: reply.find(stop)]
    assert generation.stats["finish_reason"] == "stop" and generation.stats["decode_tokens"] < 100


def test_finish_reason_reaches_stream_info(backend):
    info = StreamInfo()
    list(backend.stream(MESSAGES, info=info, max_tokens=3))
    assert info.finish_reason == "length"


def test_errors_reach_the_caller_typed_and_the_thread_survives(backend, expected, monkeypatch):
    def oom(**kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(backend.model, "generate", oom)
    with pytest.raises(BackendError, match="out of memory.*max_tokens"):
        backend.complete(MESSAGES, max_tokens=4)

    def bad_adapter(name):
        raise ValueError(f"Adapter {name} not found.")

    monkeypatch.undo()
    monkeypatch.setattr(backend.model, "set_adapter", bad_adapter)
    with pytest.raises(BackendError, match="ValueError: Adapter holmes not found"):
        backend.complete(MESSAGES, max_tokens=4, adapter="holmes")
    monkeypatch.undo()
    assert backend.complete(MESSAGES, max_tokens=24, adapter="holmes") == expected["holmes"]


def test_astream_waits_on_the_event_loop_and_matches_stream(backend, expected):
    async def main():
        release = await asyncio.to_thread(gate, backend)
        threads = set(threading.enumerate())
        chunks: list[str] = []

        async def consume():
            async for chunk in backend.astream(MESSAGES, max_tokens=24, adapter="haruhi"):
                chunks.append(chunk)

        task = asyncio.create_task(consume())
        ticks = 0
        for _ in range(10):  # the event loop runs while the reply waits behind the gate
            await asyncio.sleep(0.01)
            ticks += 1
        assert not set(threading.enumerate()) - threads  # no thread per call waits for the chunks
        release.set()
        await asyncio.wait_for(task, WAIT_S)
        return "".join(chunks), ticks

    text, ticks = asyncio.run(main())
    assert text == expected["haruhi"] and ticks == 10


def test_async_close_cancels_the_job(backend, expected, jobs):
    async def main():
        stream = backend.astream(MESSAGES, max_tokens=LONG, adapter="holmes")
        await stream.__anext__()
        await stream.aclose()

    asyncio.run(main())
    assert backend.complete(MESSAGES, max_tokens=24, adapter="haruhi") == expected["haruhi"]
    assert jobs[0].stats["finish_reason"] == "cancelled" and jobs[0].stats["decode_tokens"] < LONG


def test_close_ends_a_waiting_caller_with_an_error(tiny):
    b = TransformersBackend(tiny / "base", device="cpu", temperature=0)
    release = gate(b)
    thread, _, errors = in_thread(b.complete, MESSAGES, max_tokens=4)
    wait_until(lambda: b._serial.pending() == 1, "the call is queued")
    threading.Timer(0.5, release.set).start()  # the gate ends while close() waits for the thread
    b.close()
    thread.join(WAIT_S)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], BackendError) and "closed before" in str(errors[0])
    with pytest.raises(BackendError, match="closed"):
        b.complete(MESSAGES, max_tokens=4)
    with pytest.raises(BackendError, match="closed") as info:
        b.add_adapter("holmes", tiny / "holmes")
    assert not isinstance(info.value, AdapterError)  # a closed backend, not a broken adapter


def _serial_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("chatharuhi-serial-")}


def test_a_dropped_backend_ends_its_thread_and_frees_the_model(tiny):
    import gc
    import weakref

    b = TransformersBackend(tiny / "base", adapters={"holmes": tiny / "holmes"}, device="cpu", temperature=0)
    assert b.complete(MESSAGES, max_tokens=2)
    thread, model = b._serial._thread, weakref.ref(b.model)
    del b  # never closed
    gc.collect()
    thread.join(WAIT_S)
    assert not thread.is_alive() and model() is None


def test_a_failed_construction_leaves_no_thread(tiny):
    before = _serial_threads()
    with pytest.raises(AdapterError, match="another base model"):
        TransformersBackend(tiny / "base", adapters={"holmes": tiny / "holmes", "x": tiny / "other"}, device="cpu")
    assert _serial_threads() <= before


def test_a_cancelled_async_reply_stops_its_generation_and_commits_nothing(backend, jobs):
    from chatharuhi import ChatHaruhi

    bot = ChatHaruhi(role="haruhi", llm=backend, embedder="hash", reply_reserve=32, story_tokens=200,
                     history_tokens=100, top_k=2, postprocess=False)

    async def main():
        first = asyncio.Event()

        async def client():  # a client that disconnects: its task is cancelled mid-reply
            async for _ in bot.stream("你好", max_tokens=LONG):
                first.set()

        task = asyncio.create_task(client())
        await asyncio.wait_for(first.wait(), WAIT_S)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await bot.achat("再见", max_tokens=3)  # queued after the cancelled job: it has ended

    assert isinstance(asyncio.run(main()), str)
    assert jobs[0].stats["finish_reason"] == "cancelled" and jobs[0].stats["decode_tokens"] < LONG
    assert [t.text for t in bot.history] == ["再见"]  # the cancelled turn was not committed
