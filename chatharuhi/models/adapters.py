"""A character's own LoRA adapter: the manifest's ``[adapter]`` table, checked and resolved.

    [adapter]
    base = "embedded"              # the base it was trained on: "embedded", a pulled model name (e.g.
                                   # "qwen2.5-1.5b"), a folder, a .gguf file or a hub id
    path = "adapter"               # PEFT adapter folder (transformers backend), relative to the character folder
    gguf = "adapter.gguf"          # the same adapter as a llama.cpp LoRA GGUF (llama_cpp / embedded backends)
    served_name = "sherlock-lora"  # openai backend: the model name a server serves it under (vLLM --lora-modules)

or, for an adapter pulled by name (``chatharuhi models pull haruhi-lora``; a catalogue entry with
``kind = "adapter"``, see ``chatharuhi.models.catalog``)::

    [adapter]
    name = "haruhi-lora"           # its files come from the model store: its GGUF and/or PEFT folder
    base = "qwen2.5-1.5b"          # optional: the catalogue entry names the base; if given, it must agree

``name`` replaces ``path`` and ``gguf`` (giving both is refused); ``served_name`` may go with it.
A named adapter that is not pulled, or a name the catalogue does not know, fails when the character
loads (``AdapterNotPulled`` with the pull command, ``UnknownAdapter`` with the closest name).

When the base is a model name from the catalogue and ``ChatHaruhi(llm="llama_cpp")`` gets no
``model=``, the character's base is loaded from the store (ahead of ``CHATHARUHI_MODEL``: the
adapter only fits its base); a base not pulled is a ``ModelError`` naming the pull command when
the chatbot is built.

A backend applies it through ``Backend.use_adapter(adapter)``, which loads what it needs once and
returns the per-call options that select it (``{"adapter": name}`` for transformers, ``{"model":
served_name}`` for an OpenAI-compatible server), or ``None`` when it cannot apply adapters at all.
Files named in the table are checked when the character is loaded, not at its first reply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from ..config import EMBEDDED_BASE, MANIFEST_FILE
from ..errors import AdapterMismatch, AdapterNotPulled, InvalidCharacter, ModelError, UnknownAdapter


class AdapterSpec(BaseModel):
    """The manifest's ``[adapter]`` table (unknown keys are rejected)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    base: str | None = None
    name: str | None = None
    path: str | None = None
    gguf: str | None = None
    served_name: str | None = None

    @model_validator(mode="after")
    def _names_something(self) -> "AdapterSpec":
        if not (self.name or self.path or self.gguf or self.served_name):
            raise ValueError("name the adapter: name = an adapter pulled with `chatharuhi models pull`, path = a "
                             "PEFT folder, gguf = a llama.cpp LoRA file, or served_name = the model name an "
                             "OpenAI-compatible server serves it under")
        if self.name and (self.path or self.gguf):
            raise ValueError("name = a pulled adapter brings its own files: remove path/gguf, or remove name")
        if not self.base and not self.name:
            raise ValueError("base is required: the model the adapter was trained on (\"embedded\", a pulled model "
                             "name, a folder, a .gguf file or a hub id)")
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
    """The resolved adapter and the (field, file) pairs that do not exist (for the loader to report); a pulled
    adapter (``name =``) is looked up in the model store now (``UnknownAdapter``, ``AdapterNotPulled``)."""
    def local(value: str | None) -> Path | None:
        return None if value is None else (folder / Path(value).expanduser()).resolve()

    if spec.name:
        return _pulled_adapter(name, spec, folder), []
    base = str(spec.base)
    if base != EMBEDDED_BASE and (base.startswith((".", "~")) or os.sep in base) and not Path(base).is_absolute():
        base = str((folder / Path(base).expanduser()).resolve())  # a relative base is relative to the folder too
    adapter = CharacterAdapter(name, base, local(spec.path), local(spec.gguf), spec.served_name)
    missing = [(f, p) for f, p in (("adapter.path", adapter.path), ("adapter.gguf", adapter.gguf))
               if p is not None and not p.exists()]
    for field_name, _ in missing:
        value = spec.path if field_name == "adapter.path" else spec.gguf
        entry = _catalog_entry(value, folder / MANIFEST_FILE) if value else None
        if entry is not None and entry.is_adapter:
            raise InvalidCharacter(f"{field_name} = {value!r} is not a file in the character folder but the name of "
                                   f"a catalogue adapter: write name = {value!r} instead",
                                   path=folder / MANIFEST_FILE)
    return adapter, missing


def _catalog_entry(name: str, where: Path | None = None):
    """The catalogue entry called ``name`` (any case), or None; with ``where`` (a manifest), a broken
    ``models.toml`` is an ``InvalidCharacter`` there, so that one character fails, not every caller."""
    from ..errors import InputError
    from .catalog import catalog

    try:
        return catalog().get(name.strip().lower())
    except InputError as exc:
        if where is None:
            raise
        raise InvalidCharacter(f"its [adapter] names a model from the catalogue, which cannot be read: {exc}",
                               path=where) from None


def _pulled_adapter(character: str, spec: AdapterSpec, folder: Path) -> CharacterAdapter:
    """The adapter ``spec.name`` from the model store, checked: known, an adapter, pulled, intact, same base."""
    import difflib

    from .catalog import adapter_names
    from .store import installed, not_pulled_message, verified_path

    manifest = folder / MANIFEST_FILE
    entry = _catalog_entry(str(spec.name), manifest)
    if entry is None or not entry.is_adapter:
        names = adapter_names()
        close = difflib.get_close_matches(str(spec.name).lower(), names, n=1, cutoff=0.5)
        why = (f"{spec.name!r} is a model, not an adapter (a model goes in base =)" if entry is not None
               else f"no adapter {spec.name!r} in the catalogue")
        hint = f"; did you mean {close[0]!r}?" if close else "."
        listing = ", ".join(names) if names else "none; add one to models.toml with kind = \"adapter\""
        raise UnknownAdapter(f"adapter.name: {why}{hint} Adapters: {listing} (see `chatharuhi models list`)",
                             path=manifest, name=str(spec.name), suggestions=close)
    if spec.base and spec.base.lower() != str(entry.base).lower():
        raise InvalidCharacter(f"adapter.base = {spec.base!r}, but the pulled adapter {entry.name!r} was trained "
                               f"for {entry.base!r}: remove base or set base = {entry.base!r}", path=manifest)
    inst = installed(entry)
    if inst is None:
        raise AdapterNotPulled(f"adapter.name: {not_pulled_message(entry)}", path=manifest, model=entry.name)
    try:
        verified_path(inst)  # re-hashes a file changed since the pull
    except ModelError as exc:
        raise InvalidCharacter(f"adapter.name: {exc}", path=manifest) from None
    return CharacterAdapter(character, str(entry.base), inst.peft_folder, inst.gguf, spec.served_name)


def base_key(base: str | os.PathLike) -> str:
    """A comparable form of a base model reference: the embedded model, pulled model names and existing paths
    resolved to files."""
    base = str(base)
    if base == EMBEDDED_BASE:
        from .embedded import embedded_model_path

        path = embedded_model_path()
        return str(path.resolve()) if path is not None else EMBEDDED_BASE
    entry = _catalog_entry(base) if "/" not in base and os.sep not in base else None
    if entry is not None and not entry.is_adapter:
        if entry.builtin:
            return base_key(EMBEDDED_BASE)
        from .store import installed

        inst = installed(entry)
        return str(inst.path.resolve()) if inst is not None else entry.name  # not pulled: compared by name
    path = Path(base).expanduser()
    return str(path.resolve()) if path.exists() else base


def llama_adapter_options(adapter: CharacterAdapter, llm: Any, options: dict[str, Any]) -> dict[str, Any]:
    """For ``llm="llama_cpp"`` or ``"embedded"`` (a backend still to be built), the options that load the base of
    the character's GGUF adapter, checked against the adapter's base. With no model given, ``llama_cpp`` loads the
    adapter's base when it is a catalogue model (pulled, or a ``ModelError`` naming the pull command). The adapter
    itself is not among them: the chatbot loads it onto that (shared) model with ``use_adapter``, so characters
    on one base share one model and worker."""
    if llm not in ("llama_cpp", "embedded") or adapter.gguf is None or "lora_path" in options:
        return options
    if llm == "llama_cpp" and not any(options.get(k) for k in ("model_path", "model", "llama")):
        from .catalog import BUILTIN

        entry = BUILTIN if adapter.base == EMBEDDED_BASE else _catalog_entry(adapter.base)
        if entry is not None and not entry.is_adapter:
            from .store import pulled

            if not entry.builtin:
                try:
                    pulled(entry)
                except ModelError as exc:
                    raise ModelError(f"character {adapter.name!r}: its adapter runs on the base model "
                                     f"{entry.name!r}, and {exc}; or pass model= another base the adapter "
                                     "was trained on") from None
            options = {**options, "model": entry.name}
    model = options.get("model_path") or options.get("model")
    check_base(adapter, EMBEDDED_BASE if llm == "embedded" or model is None else model, llm)
    return options


def check_base(adapter: CharacterAdapter, loaded: str | os.PathLike, backend: str) -> None:
    """``AdapterMismatch`` naming both models when the adapter was trained for another base than ``loaded``."""
    if base_key(adapter.base) != base_key(loaded):
        raise AdapterMismatch(
            f"character {adapter.name!r}: its adapter was trained for base {adapter.base!r}, but the {backend} "
            f"backend runs {str(loaded)!r}; load that base (e.g. model={adapter.base!r}) or retrain the adapter",
            adapter_base=adapter.base, loaded_base=str(loaded))
