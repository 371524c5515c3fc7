"""A character's own LoRA adapter: the manifest's ``[adapter]`` table, checked and resolved.

    [adapter]
    base = "embedded"              # the base it was trained on: "embedded", a folder, a .gguf file or a hub id
    path = "adapter"               # PEFT adapter folder (transformers backend), relative to the character folder
    gguf = "adapter.gguf"          # the same adapter as a llama.cpp LoRA GGUF (llama_cpp / embedded backends)
    served_name = "sherlock-lora"  # openai backend: the model name a server serves it under (vLLM --lora-modules)

A backend applies it through ``Backend.use_adapter(adapter)``, which loads what it needs once and
returns the per-call options that select it (``{"adapter": name}`` for transformers, ``{"model":
served_name}`` for an OpenAI-compatible server), or ``None`` when it cannot apply adapters at all.
Files named in the table are checked when the character is loaded, not at its first reply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from .config import EMBEDDED_BASE
from .errors import AdapterMismatch


class AdapterSpec(BaseModel):
    """The manifest's ``[adapter]`` table (unknown keys are rejected)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    base: str
    path: str | None = None
    gguf: str | None = None
    served_name: str | None = None

    @model_validator(mode="after")
    def _names_something(self) -> "AdapterSpec":
        if not (self.path or self.gguf or self.served_name):
            raise ValueError("name the adapter: path = a PEFT folder, gguf = a llama.cpp LoRA file, "
                             "or served_name = the model name an OpenAI-compatible server serves it under")
        return self


@dataclass(frozen=True)
class CharacterAdapter:
    """A character's adapter with its files resolved against the character folder."""

    name: str  # the character's name: the adapter's name inside a shared backend
    base: str
    path: Path | None = None
    gguf: Path | None = None
    served_name: str | None = None


def resolve_adapter(name: str, spec: AdapterSpec, folder: Path) -> tuple[CharacterAdapter, list[tuple[str, Path]]]:
    """The resolved adapter and the (field, file) pairs that do not exist (for the loader to report)."""
    def local(value: str | None) -> Path | None:
        return None if value is None else (folder / Path(value).expanduser()).resolve()

    base = spec.base
    if base != EMBEDDED_BASE and (base.startswith((".", "~")) or os.sep in base) and not Path(base).is_absolute():
        base = str((folder / Path(base).expanduser()).resolve())  # a relative base is relative to the folder too
    adapter = CharacterAdapter(name, base, local(spec.path), local(spec.gguf), spec.served_name)
    missing = [(f, p) for f, p in (("adapter.path", adapter.path), ("adapter.gguf", adapter.gguf))
               if p is not None and not p.exists()]
    return adapter, missing


def base_key(base: str | os.PathLike) -> str:
    """A comparable form of a base model reference: the embedded model and existing paths resolved."""
    base = str(base)
    if base == EMBEDDED_BASE:
        from .backends.embedded import embedded_model_path

        path = embedded_model_path()
        return str(path.resolve()) if path is not None else EMBEDDED_BASE
    path = Path(base).expanduser()
    return str(path.resolve()) if path.exists() else base


def check_base(adapter: CharacterAdapter, loaded: str | os.PathLike, backend: str) -> None:
    """``AdapterMismatch`` naming both models when the adapter was trained for another base than ``loaded``."""
    if base_key(adapter.base) != base_key(loaded):
        raise AdapterMismatch(
            f"character {adapter.name!r}: its adapter was trained for base {adapter.base!r}, but the {backend} "
            f"backend runs {str(loaded)!r}; load that base (e.g. model={adapter.base!r}) or retrain the adapter",
            adapter_base=adapter.base, loaded_base=str(loaded))
