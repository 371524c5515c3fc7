"""The transformers runtime: a base model and per-character PEFT LoRA adapters, loaded lazily, on its own thread."""
