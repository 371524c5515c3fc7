"""A PEFT LoRA adapter written as a llama.cpp LoRA GGUF (what ``llama_cpp.Llama(lora_path=...)`` loads).

The file follows llama.cpp's ``convert_lora_to_gguf.py`` conventions: ``general.type = "adapter"``,
``adapter.type = "lora"``, ``adapter.lora.alpha``, the base's ``general.architecture``, and two
tensors per adapted weight, ``blk.N.<name>.weight.lora_a`` (rank × in) and ``.lora_b`` (out × rank),
named as the base GGUF names its weights. llama.cpp scales by alpha / rank, as PEFT does.

One conversion is not a rename: llama.cpp's Llama converter stores ``q_proj`` and ``k_proj`` with
their rows permuted for its rotary embedding (transformers undoes that when it reads a GGUF), so the
rows of ``lora_B`` for those two are permuted the same way (W = B·A: permuting W's rows permutes B's).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from ..errors import AdapterError, InputError

# Hugging Face module name -> the GGUF tensor name llama.cpp uses for that weight
GGUF_NAMES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
              "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
# model_type -> (GGUF architecture, whether q/k rows are permuted by llama.cpp's converter)
ARCHITECTURES = {"llama": ("llama", True), "mistral": ("llama", True), "qwen2": ("qwen2", False)}
_KEY = re.compile(r"layers\.(?P<layer>\d+)\.(?:self_attn|mlp)\.(?P<module>\w+)\.lora_(?P<ab>[AB])(?:\.\w+)?\.weight$")


def base_shape(base: str | os.PathLike) -> dict[str, Any]:
    """``model_type``, ``n_head`` and ``n_head_kv`` of a base model: a folder, a .gguf file, 'embedded' or a hub id."""
    from ..backends.transformers.backend import locate_base

    source, gguf_file = locate_base(base)
    if gguf_file:
        import gguf

        reader = gguf.GGUFReader(str(Path(source) / gguf_file))

        def field(key: str) -> Any:
            f = reader.fields.get(key)
            return None if f is None else f.contents()

        arch = field("general.architecture")
        head = field(f"{arch}.attention.head_count")
        return {"model_type": arch, "n_head": head, "n_head_kv": field(f"{arch}.attention.head_count_kv") or head}
    config_file = Path(source) / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
    else:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(source).to_dict()
    head = config.get("num_attention_heads")
    return {"model_type": config.get("model_type"), "n_head": head,
            "n_head_kv": config.get("num_key_value_heads") or head}


def _permute_rows(weights: Any, n_head: int) -> Any:
    """llama.cpp's rotary row order for a q/k projection (applied to lora_B's rows)."""
    rows = weights.shape[0]
    return weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def export_gguf(adapter: str | os.PathLike, out: str | os.PathLike, base: str | os.PathLike | None = None) -> Path:
    """Write the PEFT adapter folder ``adapter`` as a llama.cpp LoRA GGUF at ``out``; returns ``out``."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    from ..backends.transformers.backend import check_adapter_folder

    adapter, out = Path(adapter), Path(out)
    config = check_adapter_folder(adapter)
    if config.get("peft_type") != "LORA":
        raise AdapterError(f"{adapter}: a {config.get('peft_type')} adapter; only LoRA converts to GGUF")
    for key in ("use_dora", "rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise AdapterError(f"{adapter}: {key} is set; llama.cpp LoRA GGUF has one rank and alpha per adapter "
                               "and no DoRA: train without it")
    weights_file = adapter / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise AdapterError(f"{adapter}: GGUF export reads adapter_model.safetensors; save with safe_serialization")
    base = base or config.get("base_model_name_or_path")
    if not base:
        raise InputError(f"{adapter}: the adapter does not name its base model; pass base= (--base)")
    shape = base_shape(base)
    if shape["model_type"] not in ARCHITECTURES:
        raise AdapterError(f"GGUF export supports {', '.join(sorted(ARCHITECTURES))} bases, not "
                           f"{shape['model_type']!r} ({base})")
    arch, permute = ARCHITECTURES[shape["model_type"]]
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    if config.get("use_rslora"):  # PEFT scales by alpha/sqrt(r), llama.cpp by alpha/r
        alpha *= math.sqrt(rank)

    tensors: list[tuple[str, Any]] = []
    for key, value in sorted(load_file(str(weights_file)).items()):
        m = _KEY.search(key)
        if m is None or m["module"] not in GGUF_NAMES:
            raise AdapterError(f"{adapter}: tensor {key} has no llama.cpp LoRA equivalent; train LoRA only on "
                               f"{', '.join(GGUF_NAMES)}")
        array = value.astype(np.float32)
        if permute and m["ab"] == "B" and m["module"] in ("q_proj", "k_proj"):
            array = _permute_rows(array, shape["n_head"] if m["module"] == "q_proj" else shape["n_head_kv"])
        tensors.append((f"blk.{m['layer']}.{GGUF_NAMES[m['module']]}.weight.lora_{m['ab'].lower()}", array))
    if not tensors:
        raise AdapterError(f"{adapter}: no LoRA tensors found")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_name(f"{adapter.name} (LoRA for {Path(str(base)).name})")
    for name, array in tensors:
        writer.add_tensor(name, np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out)
    return out
