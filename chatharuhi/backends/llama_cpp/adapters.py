"""GGUF LoRA adapters on the worker's one model (``worker_main.py``), chosen per generation.

llama.cpp loads an adapter onto the model (``llama_adapter_lora_init``) and applies a set of them to
the context (``llama_set_adapters_lora``; an empty set is the base model). The KV cache holds keys and
values computed under whatever was applied, so the worker drops it when ``select`` reports a switch.
"""

from __future__ import annotations

import ctypes
from typing import Any


class AdapterRejected(Exception):
    """llama.cpp would not load the file onto this model (its log says why)."""


class Adapters:
    """The GGUF LoRA adapters loaded onto one ``llama_cpp.Llama``, and which one its context applies now."""

    def __init__(self, llm: Any):
        self._llm = llm
        self.loaded: dict[str, tuple[Any, float]] = {}  # id -> (llama_adapter_lora pointer, scale)
        self.active: str | None = None

    def load(self, adapter_id: str, path: str, scale: float) -> None:
        """Load ``path`` under ``adapter_id`` (once); a file llama.cpp rejects is ``AdapterRejected``."""
        import llama_cpp

        if adapter_id in self.loaded:
            return
        handle = llama_cpp.llama_adapter_lora_init(self._llm._model.model, path.encode("utf-8"))
        if not handle:
            raise AdapterRejected(f"{path}: llama.cpp cannot load this LoRA adapter onto the model; is it a GGUF "
                                  "LoRA made for this base (chatharuhi train --gguf, chatharuhi export-gguf)?")
        self.loaded[adapter_id] = (handle, scale)
        self._llm._stack.callback(llama_cpp.llama_adapter_lora_free, handle)  # freed before the model, with it

    def select(self, adapter_id: str | None) -> bool:
        """Apply ``adapter_id`` (None: the base model); True when that changed what the context applies."""
        import llama_cpp

        if adapter_id == self.active:
            return False
        if adapter_id is not None and adapter_id not in self.loaded:
            raise KeyError(f"adapter {adapter_id!r} is not loaded in this worker")
        ctx = self._llm._ctx.ctx
        if adapter_id is None:
            code = llama_cpp.llama_set_adapters_lora(ctx, None, 0, None)
        else:
            handle, scale = self.loaded[adapter_id]
            code = llama_cpp.llama_set_adapters_lora(ctx, (llama_cpp.llama_adapter_lora_p_ctypes * 1)(handle), 1,
                                                     (ctypes.c_float * 1)(scale))
        if code:
            raise RuntimeError(f"llama.cpp could not apply adapter {adapter_id!r} (status {code})")
        self.active = adapter_id
        return True
