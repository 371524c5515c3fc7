"""A tiny randomly initialised Llama, its trained BPE tokenizer and real PEFT LoRA adapters (no downloads)."""

from __future__ import annotations

import peft
import torch
import transformers

from chatharuhi.types import Message

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = ["Holmes: Where were you last night, Watson?", "Watson: I was at the club.", "春日:「我们去找外星人吧」",
          "阿虚:「又来了」", "The game is afoot."] * 20
MESSAGES = [Message("system", "You are Holmes."), Message("user", "Watson:「Where were you?」")]


def _tokenizer():
    """A 400-token byte-level BPE trained on a few lines, with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _model(tokenizer, hidden: int = 32, seed: int = 0):
    """A 2-layer random Llama for ``tokenizer``."""
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=4096, eos_token_id=tokenizer.eos_token_id,
                                      pad_token_id=tokenizer.pad_token_id)
    return transformers.LlamaForCausalLM(config)


def _adapter(base, path, seed: int) -> None:
    """A random rank-4 q/v LoRA for ``base``, saved at ``path``."""
    torch.manual_seed(seed)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft.get_peft_model(base, config).save_pretrained(path)
