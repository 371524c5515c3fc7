"""The llama.cpp runtime: GGUF models in a worker process, their chat templates and exact token counts, adapters."""
