"""The ``transformers`` backend: a base model plus per-character PEFT LoRA adapters (the ``[local]`` extra).

The base model is a local folder (or a hub id when online, or a GGUF file through ``gguf_file=``);
adapters are loaded once, by name, and switched per reply with ``stream(..., adapter="haruhi")``
without reloading the base. ``adapter=None`` runs the bare base model.

The prompt is the tokenizer's chat template rendered to text and encoded without added special
tokens (the template already writes them), so the token counter counts exactly what generation
receives. Stop strings are cut on our side (the streamer would show them), and a reply can be
prefilled like ``llama_cpp``'s.

One generation at a time per model, on the model's own thread (``serial.Serial``), fed by a queue:
``stream()`` returns a ``Generation`` that queues a job when first iterated and reads the job's own
buffer, so no lock is held while a caller holds the stream, the caller may resume it on any thread,
and ``astream`` waits on the event loop without a thread. A job runs to its end even if its consumer
pauses (the chunks wait in its buffer, and the next job starts when it is done); closing or dropping
the stream cancels the job at the next token. Loading an adapter also runs on that thread, between
jobs, since it changes the model under any generation.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Any, AsyncIterator, Mapping, Sequence

from ...config import (
    DEFAULT_CONTEXT_WINDOW,
    DEFAULT_LOCAL_TEMPERATURE,
    DEFAULT_LOCAL_TIMEOUT_S,
    DEFAULT_REPEAT_PENALTY,
)
from ...errors import AdapterError, BackendError, BackendUnavailable, BudgetError, ChatHaruhiError, ModelError
from ...types import Message
from ..base import Backend, StreamInfo
from .generate import Generation, Request, achunks, generation_work
from .load import INSTALL_HINT, check_adapter_folder, import_torch, locate_base, pick_device, pick_dtype
from .serial import Serial


class TransformersCounter:
    """Exact counts: the tokenizer's chat template rendered and encoded, as ``stream`` does."""

    additive = False  # chat templates inject text (default system prompts, BOS), so the packer recounts

    def __init__(self, backend: "TransformersBackend"):
        self._backend = backend
        self.id = f"transformers:{backend.model_name}"

    def count(self, text: str) -> int:
        """Tokens of a bare text."""
        return len(self._backend.tokenizer.encode(text, add_special_tokens=False))

    def count_messages(self, messages: Sequence[Message]) -> int:
        """Tokens of the whole prompt, generation prompt included."""
        try:
            return len(self._backend.encode(messages))
        except BackendError:
            if len(messages) > 1:
                raise
            return sum(self.count(m.content) + 4 for m in messages) + 4  # the packer's lone-role probes


class TransformersBackend(Backend):
    """A transformers causal LM, optionally with named LoRA adapters switched per reply."""

    name = "transformers"
    extra_options = frozenset({"top_p", "top_k", "repetition_penalty"})  # sampling defaults, through **options
    call_options = frozenset({"adapter", "prefill", "max_tokens", "stop", "temperature", "top_p", "top_k", "seed"})
    supports_prefill = True

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        adapters: Mapping[str, str | os.PathLike] | None = None,
        adapter: str | None = None,
        device: str | None = None,
        dtype: Any = None,
        quantization: str | None = None,
        gguf_file: str | None = None,
        context_window: int | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        model_path: str | os.PathLike | None = None,
        trust_remote_code: bool = False,
        timeout: float | None = None,
        **options: Any,
    ):
        """Load ``model`` (a folder, or a hub id) and every adapter in ``adapters`` (name -> folder).

        ``adapter``: the one used when a call names none. ``quantization``: "4bit" or "8bit" (CUDA and
        bitsandbytes only). ``device``/``dtype``: automatic unless given. ``timeout``: seconds the model's
        thread may go without producing a token before a waiting caller gets ``BackendTimeout``.
        """
        torch, transformers = import_torch()
        self.torch = torch
        source = model or model_path
        if source is None:
            raise ModelError("the transformers backend needs model= a model folder (or a hub id when online)")
        source, gguf_file = locate_base(source, gguf_file)
        looks_local = os.sep in source or source.startswith((".", "~")) or Path(source).suffix == ".gguf"
        if looks_local and not Path(source).exists():
            raise ModelError(f"model folder not found: {source}; pass model= a folder with config.json "
                             "(or a hub id when online)")
        self.model_name = f"{source}/{gguf_file}" if gguf_file else source
        self.device = pick_device(torch, device)
        self.dtype = pick_dtype(torch, self.device, dtype)
        load: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if gguf_file:
            load["gguf_file"] = gguf_file
        if quantization:
            load["quantization_config"] = self._quantization(transformers, quantization)
        self.temperature = DEFAULT_LOCAL_TEMPERATURE if temperature is None else temperature
        self.max_tokens = max_tokens
        self._sampling = {k: options[k] for k in ("top_p", "top_k", "repetition_penalty") if k in options}
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(source, **load)
            self.model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=self.dtype, **load)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the model {source!r}: {exc}") from exc
        if not quantization:
            self.model.to(self.device)
        self.model.eval()
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ModelError(f"{source}: the tokenizer has no chat_template; use an instruct/chat model "
                             "or set tokenizer.chat_template")
        self.context_window = context_window or self._window()
        self.adapters: dict[str, Path] = {}
        # One generation at a time, on this thread: the active adapter is global state of the model.
        self._serial = serial = Serial(Path(self.model_name).name or self.model_name,
                                       DEFAULT_LOCAL_TIMEOUT_S if timeout is None else timeout)
        weakref.finalize(self, serial.close, 0)  # a backend dropped without close() ends its thread too
        try:
            for name, path in (adapters or {}).items():
                self.add_adapter(name, path)
            if adapter is not None and adapter not in self.adapters:
                raise AdapterError(f"unknown adapter {adapter!r}; loaded: {', '.join(self.adapters) or '(none)'}")
        except BaseException:
            serial.close()
            raise
        self.default_adapter = adapter if adapter is not None else next(iter(self.adapters), None)

    def _quantization(self, transformers: Any, quantization: str) -> Any:
        if quantization not in ("4bit", "8bit"):
            raise BackendError(f"quantization={quantization!r}: use '4bit' or '8bit'")
        if not self.device.startswith("cuda"):
            raise BackendUnavailable(f"quantization={quantization!r} needs a CUDA GPU (bitsandbytes); "
                                     f"this backend runs on {self.device}: leave quantization unset")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise BackendUnavailable(
                f"quantization={quantization!r} needs bitsandbytes: pip install bitsandbytes") from None
        if quantization == "8bit":
            return transformers.BitsAndBytesConfig(load_in_8bit=True)
        return transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                               bnb_4bit_compute_dtype=self.dtype)

    def _window(self) -> int:
        config = self.model.config
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return DEFAULT_CONTEXT_WINDOW

    # -- adapters -------------------------------------------------------------------------------
    def add_adapter(self, name: str, path: str | os.PathLike) -> None:
        """Load a PEFT LoRA adapter under ``name`` (the base model is not reloaded)."""
        path = Path(path).expanduser()
        config = check_adapter_folder(path)
        try:
            from peft import PeftModel
        except ImportError:
            raise BackendUnavailable(f"LoRA adapters need peft: {INSTALL_HINT}") from None
        base = config.get("base_model_name_or_path") or "?"

        def load() -> None:
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(path), adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
            self.model.eval()
            self.adapters[name] = path

        try:
            self._serial.call(load)  # between generations: it changes the model under them
        except ChatHaruhiError:  # the backend was closed: not the adapter's fault
            raise
        except Exception as exc:  # peft and safetensors raise RuntimeError, ValueError, SafetensorError, OSError
            text = str(exc)
            what = (text.splitlines() or [type(exc).__name__])[0][:300]
            if "size mismatch" in text or "not found in the base model" in text or "Target modules" in text:
                raise AdapterError(
                    f"adapter {name!r} ({path}) was trained for another base model ({base}), not {self.model_name}: "
                    f"{what}; load it with its own base model") from exc
            raise AdapterError(f"adapter {name!r} ({path}) is corrupt or unreadable: {what}; "
                               "save or download it again") from exc

    def use_adapter(self, adapter: Any) -> dict[str, Any]:
        """Load a character's adapter (once) under the character's name; the options select it per call."""
        from ...models.adapters import check_base

        check_base(adapter, self.model_name, self.name)
        if adapter.path is None:
            raise AdapterError(f"character {adapter.name!r}: the transformers backend needs a PEFT adapter "
                               "folder: add path = '...' to [adapter] in character.toml")

        def load_once() -> None:  # on the model's thread, so two characters loading at once cannot race
            loaded = self.adapters.get(adapter.name)
            if loaded is None:
                self.add_adapter(adapter.name, adapter.path)
            elif loaded.resolve() != adapter.path.resolve():
                raise AdapterError(f"adapter name {adapter.name!r} is already taken by {loaded}; "
                                   f"two characters with one name cannot share a backend ({adapter.path})")

        self._serial.call(load_once)
        return {"adapter": adapter.name}

    # -- prompt ---------------------------------------------------------------------------------
    def render(self, messages: Sequence[Message]) -> str:
        """The prompt text from the tokenizer's chat template, generation prompt included."""
        payload = [m.as_dict() if isinstance(m, Message) else dict(m) for m in messages]
        try:
            return self.tokenizer.apply_chat_template(payload, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # jinja errors, a template's raise_exception
            raise BackendError(f"{self.model_name}: the chat template rejected the messages: {exc}") from exc

    def encode(self, messages: Sequence[Message], prefill: str = "") -> list[int]:
        """Token ids of the prompt (plus ``prefill``) exactly as generation receives them."""
        return self.tokenizer.encode(self.render(messages) + prefill, add_special_tokens=False)

    def token_counter(self) -> TransformersCounter:
        """The exact counter for this tokenizer and chat template."""
        return TransformersCounter(self)

    def describe(self) -> str:
        """The model folder or hub id, and ``transformers``."""
        return f"{self.model_name} (transformers)"

    # -- generation -----------------------------------------------------------------------------
    def stream(self, messages: Sequence[Message], *, info: StreamInfo | None = None, **options: Any) -> Generation:
        """Yield the reply, filling ``info.finish_reason`` ("stop" or "length") when it ends. Options: max_tokens,
        temperature, top_p, top_k, stop, prefill, adapter, seed."""
        request, prefill = self._request(messages, options)
        return Generation(self._serial, generation_work(self, request), prefill, info)

    def astream(self, messages: Sequence[Message], *, info: StreamInfo | None = None,
                **options: Any) -> AsyncIterator[str]:
        """Async twin of ``stream``: the chunks arrive on the running event loop (no thread per call)."""
        request, prefill = self._request(messages, options)
        return achunks(self._serial, generation_work(self, request), prefill, info)

    def _request(self, messages: Sequence[Message], options: dict[str, Any]) -> tuple[Request, str]:
        """The checked generation request and its prefill (errors raise here, on the caller's thread)."""
        self.check_call_options(options)
        if self._serial.closed:
            raise BackendError(f"{self.model_name}: the backend was closed")
        adapter = options.get("adapter", self.default_adapter)
        if adapter is not None and adapter not in self.adapters:
            raise AdapterError(f"unknown adapter {adapter!r}; loaded: {', '.join(self.adapters) or '(none)'}")
        prefill = options.get("prefill") or ""
        ids = self.encode(messages, prefill)
        room = self.context_window - len(ids)
        if room <= 0:
            raise BudgetError(f"the prompt is {len(ids)} tokens but the model's window is {self.context_window}; "
                              "send less or raise context_window", part="prompt", tokens=len(ids),
                              budget=self.context_window)
        max_new = min(options.get("max_tokens") or self.max_tokens or room, room)
        stop = options.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        temperature = options.get("temperature", self.temperature)
        sampling = {**self._sampling, **{k: options[k] for k in ("top_p", "top_k") if options.get(k) is not None}}
        if temperature and temperature > 0:
            sampling.update(do_sample=True, temperature=temperature)
        else:
            sampling.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        sampling.setdefault("repetition_penalty", DEFAULT_REPEAT_PENALTY)
        return Request(ids, max_new, stop, adapter, sampling, options.get("seed")), prefill

    def _adapter_scope(self, adapter: str | None):
        from contextlib import nullcontext

        if not self.adapters:
            return nullcontext()
        if adapter is None:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter)
        return nullcontext()

    def close(self) -> None:
        """Stop the model's thread (a reply in progress ends with ``BackendError``), drop the model, free GPU memory."""
        serial = getattr(self, "_serial", None)
        if serial is not None:
            serial.close()
        self.model = None
        if self.device.startswith("cuda"):
            self.torch.cuda.empty_cache()
