"""Per-character LoRA adapters: the manifest's [adapter] table, loaded on a shared base and picked per call.

Real components: a tiny randomly initialised Llama saved to disk and real PEFT adapters built here
(no downloads), a real OpenAI-compatible HTTP server for the served-name path, the real server app.
"""

from __future__ import annotations

import threading
import warnings

import pytest

from chatharuhi.character.folder import load_character
from chatharuhi.errors import AdapterError, AdapterMismatch, InvalidCharacter
from helpers.adapter_folders import character_folder as _character  # noqa: E402

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from chatharuhi import ChatHaruhi  # noqa: E402
from chatharuhi.backends.transformers.backend import TransformersBackend  # noqa: E402
from helpers.tiny_llama import _adapter, _model, _tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny base, two real adapters for it, and two characters naming them in their manifests."""
    root = tmp_path_factory.mktemp("adapters")
    tokenizer = _tokenizer()
    _model(tokenizer).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    _adapter(_model(tokenizer), root / "holmes-lora", seed=1)
    _adapter(_model(tokenizer), root / "haruhi-lora", seed=2)
    chars = root / "characters"
    for name in ("holmes", "haruhi"):
        _character(chars, name, f'[adapter]\nbase = "{root / "base"}"\npath = "{root / (name + "-lora")}"\n')
    return root


@pytest.fixture(scope="module")
def shared(tiny):
    backend = TransformersBackend(tiny / "base", device="cpu", temperature=0)
    yield backend
    backend.close()


def _bot(tiny, backend, name, **kw):
    return ChatHaruhi(name, llm=backend, embedder="hash", characters_dir=tiny / "characters", top_k=0,
                      postprocess=False, reply_reserve=8, **kw)


def test_each_character_gets_its_own_adapter_from_many_threads(tiny, shared):
    holmes, haruhi = _bot(tiny, shared, "holmes"), _bot(tiny, shared, "haruhi")
    assert set(shared.adapters) == {"holmes", "haruhi"}  # loaded at construction, not at the first reply
    base = _bot(tiny, shared, "holmes", use_adapter=False)
    query = "Where were you?"
    expected = {"holmes": holmes.chat(query, history=[]), "haruhi": haruhi.chat(query, history=[]),
                "base": base.chat(query, history=[])}
    assert len(set(expected.values())) == 3, expected  # two adapters and the base model all differ

    bots = {"holmes": holmes, "haruhi": haruhi, "base": base}
    got: list[tuple[str, str]] = []
    errors: list[BaseException] = []

    def worker(order):
        try:
            for name in order:
                got.append((name, bots[name].chat(query, history=[])))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    orders = [["holmes", "haruhi", "base"], ["haruhi", "base", "holmes"], ["base", "holmes", "haruhi"]] * 2
    threads = [threading.Thread(target=worker, args=(o,)) for o in orders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(got) == 18
    assert all(text == expected[name] for name, text in got), got


def test_an_explicit_adapter_per_call_wins(tiny, shared):
    holmes, base = _bot(tiny, shared, "holmes"), _bot(tiny, shared, "holmes", use_adapter=False)
    assert holmes.chat("Hi", history=[], adapter=None) == base.chat("Hi", history=[]) != holmes.chat("Hi", history=[])


def test_server_picks_each_characters_adapter(tiny, shared):
    from fastapi.testclient import TestClient

    from chatharuhi.server.app import create_app

    app = create_app(shared, characters_dir=tiny / "characters", embedder="hash", top_k=0, postprocess=False)
    with TestClient(app) as http:
        def ask(model):
            body = {"model": model, "messages": [{"role": "user", "content": "Where were you?"}], "max_tokens": 8}
            response = http.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            return response.json()["choices"][0]["message"]["content"]

        replies = {name: ask(name) for name in ("holmes", "haruhi")}
        assert replies["holmes"] != replies["haruhi"]
        assert ask("haruhi") == replies["haruhi"] and ask("holmes") == replies["holmes"]


def test_adapter_for_another_base_names_both(tiny, shared, tmp_path):
    _character(tmp_path, "moriarty",
               f'[adapter]\nbase = "HuggingFaceTB/SmolLM2-1.7B"\npath = "{tiny / "holmes-lora"}"\n')
    with pytest.raises(AdapterMismatch) as info:
        ChatHaruhi("moriarty", llm=shared, embedder="hash", characters_dir=tmp_path, top_k=0)
    message = str(info.value)
    assert "SmolLM2-1.7B" in message and str(tiny / "base") in message
    assert "moriarty" not in shared.adapters


def test_missing_adapter_fails_at_load(tiny, tmp_path):
    folder = _character(tmp_path, "lestrade", f'[adapter]\nbase = "{tiny / "base"}"\npath = "lora-not-trained-yet"\n')
    with pytest.raises(InvalidCharacter, match=r"adapter\.path: .*lora-not-trained-yet does not exist"):
        load_character(folder)
    folder = _character(tmp_path, "hudson", f'[adapter]\nbase = "{tiny / "base"}"\ngguf = "hudson.gguf"\n')
    with pytest.raises(InvalidCharacter, match=r"adapter\.gguf"):
        load_character(folder)


@pytest.mark.parametrize("table, words", [
    ('[adapter]\nbase = "x"\n', "name the adapter"),
    ('[adapter]\nbase = "x"\nserved_name = "a"\nscale = 2\n', "scale"),
    ('[adapter]\npath = "a"\n', "base"),
])
def test_bad_adapter_tables(tmp_path, table, words):
    with pytest.raises(InvalidCharacter, match=words):
        load_character(_character(tmp_path, "bad", table))


def test_relative_paths_resolve_against_the_character_folder(tiny, tmp_path):
    import shutil

    folder = _character(tmp_path, "watson",
                        '[adapter]\nbase = "embedded"\npath = "lora"\nserved_name = "watson-lora"\n')
    shutil.copytree(tiny / "holmes-lora", folder / "lora")
    c = load_character(folder)
    assert c.adapter.path == (folder / "lora").resolve() and c.adapter.name == "watson"
    assert c.adapter.served_name == "watson-lora"


def test_backend_that_cannot_apply_an_adapter(tiny):
    from chatharuhi.backends.scripted import ScriptedBackend

    kw = dict(embedder="hash", characters_dir=tiny / "characters", top_k=0)
    with pytest.warns(UserWarning, match="cannot apply it"):
        ChatHaruhi("holmes", llm=ScriptedBackend(), **kw)
    with pytest.raises(AdapterError, match="cannot apply it"):
        ChatHaruhi("holmes", llm=ScriptedBackend(), use_adapter=True, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ChatHaruhi("holmes", llm=ScriptedBackend(), use_adapter=False, **kw)


def test_openai_backend_asks_for_the_served_adapter(tmp_path):
    from chatharuhi.backends.openai_compat import OpenAIBackend
    from helpers.openai_stub import StubOpenAIServer

    for name in ("holmes", "haruhi"):
        _character(tmp_path, name, f'[adapter]\nbase = "Qwen/Qwen2.5-7B-Instruct"\nserved_name = "{name}-lora"\n')
    with StubOpenAIServer("At the club.") as stub:
        backend = OpenAIBackend(base_url=stub.base_url, api_key="k", model="Qwen/Qwen2.5-7B-Instruct", max_retries=0)
        bots = {n: ChatHaruhi(n, llm=backend, embedder="hash", characters_dir=tmp_path, top_k=0)
                for n in ("holmes", "haruhi")}
        for name in ("holmes", "haruhi", "holmes"):
            bots[name].chat("Where were you?")
            assert stub.requests[-1].body["model"] == f"{name}-lora"
        plain = ChatHaruhi("holmes", llm=backend, embedder="hash", characters_dir=tmp_path, top_k=0,
                           use_adapter=False)
        plain.chat("Where were you?")
        assert stub.requests[-1].body["model"] == "Qwen/Qwen2.5-7B-Instruct"


def test_a_gguf_adapter_rides_along_when_llama_cpp_is_built_for_the_character(tmp_path):
    from chatharuhi.models.adapters import llama_adapter_options as gguf_adapter_options

    folder = _character(tmp_path, "watson", '[adapter]\nbase = "embedded"\ngguf = "watson.gguf"\n')
    (folder / "watson.gguf").write_bytes(b"GGUF")
    adapter = load_character(folder).adapter
    assert gguf_adapter_options(adapter, "embedded", {}) == {}  # the chatbot loads it onto the shared model
    assert gguf_adapter_options(adapter, "embedded", {"lora_path": "x.gguf"}) == {"lora_path": "x.gguf"}
    assert gguf_adapter_options(adapter, "transformers", {}) == {}  # that backend uses path=, not gguf=
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF")
    with pytest.raises(AdapterMismatch, match="other.gguf"):
        gguf_adapter_options(adapter, "llama_cpp", {"model_path": str(other)})
