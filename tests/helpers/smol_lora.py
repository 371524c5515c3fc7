"""Real llama.cpp LoRA adapters for the embedded SmolLM2, built in seconds without its weights.

The PEFT source is a random Llama with SmolLM2-135M's attention shapes (576 wide, 9 heads, 3 kv heads,
30 layers); the rest is cut small, since a LoRA on q/v only needs those. ``chatharuhi.training.gguf_export``
writes it as a GGUF LoRA, and llama.cpp checks every shape against the real model when it loads one.
"""

from __future__ import annotations

from pathlib import Path


def smol_lora(folder: Path, seed: int) -> Path:
    """Write ``folder/smol-lora.gguf`` (and its PEFT source, ``folder/peft``): a random LoRA for SmolLM2."""
    import peft
    import torch
    import transformers

    from chatharuhi.training.gguf_export import export_gguf

    torch.manual_seed(seed)
    smol = transformers.LlamaConfig(vocab_size=64, hidden_size=576, intermediate_size=64, num_hidden_layers=30,
                                    num_attention_heads=9, num_key_value_heads=3)
    # alpha 8 (scale 1): each adapter answers in its own coherent English. At 64 the replies were noise, whose flat
    # distributions let the last float bits (a prompt read from cache, replies decoded in one batch) pick the token.
    lora = peft.LoraConfig(r=8, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft.get_peft_model(transformers.LlamaForCausalLM(smol), lora).save_pretrained(folder / "peft")
    return export_gguf(folder / "peft", folder / "smol-lora.gguf", "embedded")


def other_base_lora(folder: Path) -> Path:
    """``folder/other-lora.gguf``: a real LoRA GGUF of the same architecture (llama) made for another, smaller
    base (64 wide, 2 layers), which llama.cpp refuses to load onto SmolLM2."""
    import peft
    import torch
    import transformers

    from chatharuhi.training.gguf_export import export_gguf

    torch.manual_seed(0)
    tiny = transformers.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=4)
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["v_proj"], init_lora_weights=False)
    peft.get_peft_model(transformers.LlamaForCausalLM(tiny), lora).save_pretrained(folder / "peft")
    return export_gguf(folder / "peft", folder / "other-lora.gguf", "embedded")
