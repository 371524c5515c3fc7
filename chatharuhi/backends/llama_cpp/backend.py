"""The ``llama_cpp`` backend: any GGUF file, served by llama.cpp's own server in a worker process (xllamacpp).

The worker (``worker.py``) is llama.cpp's C++ server from the prebuilt xllamacpp wheel, bound to 127.0.0.1
with a random API key and CORS closed. We talk to it with the client the ``openai`` backend uses, so
local and remote models share one wire protocol. The server does what this module once did itself:
``n_parallel`` slots decode several chats at once (continuous batching), each slot keeps its prompt's KV
cache and a request goes to the slot whose prompt shares the longest prefix with it, and a host-memory
prompt cache (``cache_ram_mib``) keeps prompts that lost their slot. A native crash is a ``WorkerCrashed``
error for the requests in flight; the next one starts a fresh worker.

Prompts are counted exactly with the server's own chat template and tokenizer (``/apply-template``,
``/tokenize``), so the packer fills a window that is really that size, and an over-long prompt is a
``BudgetError`` before it is sent. A reply can be *prefilled*: ``stream(..., prefill="Holmes:「",
stop=["」"])`` ends the messages with an assistant turn that the server continues; the prefill is yielded
first. Small models stay in character far better that way.

GGUF LoRA adapters are loaded once when the worker starts, all at scale 0, and every request sends the
scale of *every* adapter (the chosen one at its scale, the others at 0): a request that left the list out
would reuse KV computed under whatever adapter the slot last ran (garbage). ``adapter=`` picks one per
call; ``lora_path=`` is the default. Characters with their own adapters share one base model
(``use_adapter``); an adapter added later restarts the worker (its caches go with it), so pass
``adapters=`` up front when the characters are known.

With no ``model_path`` the backend runs the embedded default (``models/embedded.py``), registered as
``embedded``.
"""

from __future__ import annotations

import asyncio
import weakref
from importlib.util import find_spec
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

from ...config import (
    DEFAULT_LOCAL_CACHE_RAM_MIB,
    DEFAULT_LOCAL_CONTEXT_WINDOW,
    DEFAULT_LOCAL_START_TIMEOUT_S,
    DEFAULT_LOCAL_TEMPERATURE,
    DEFAULT_LOCAL_THREADS,
    DEFAULT_LOCAL_TIMEOUT_S,
    DEFAULT_REPEAT_PENALTY,
    EMBEDDED_BUDGET,
)
from ...errors import (
    AdapterError,
    AdapterMismatch,
    BackendConnectionError,
    BackendError,
    BackendResponseError,
    BackendTimeout,
    BackendUnavailable,
    BudgetError,
    InputError,
    ModelError,
)
from ...types import Message
from ..base import Backend, StreamInfo
from .render import LlamaCppCounter
from .server_main import PASSTHROUGH
from .sizing import default_parallel, gguf_header
from .stream import Generation, achunks, chunks
from .worker import Child, Worker, auto_threads

INSTALL_HINT = "pip install 'chatharuhi[embedded]' (a prebuilt wheel: no compiler)"
DEFAULT_SEED = 0
_SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed")


def thread_count(name: str, value: Any) -> int | None:
    """A thread option checked: a positive int, or None for ``"auto"``/unset; anything else is ``InputError``."""
    if value is None or value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name}={value!r}: pass a number of threads (1 or more) or 'auto' "
                         "(the physical cores but one)")
    return value


def _whole(name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InputError(f"{name}={value!r}: pass a whole number, {least} or more")
    return value


class LlamaCppBackend(Backend):
    """A GGUF model served by llama.cpp's server in a worker process; streams, honours stop strings and prefill."""

    name = "llama_cpp"
    supports_prefill = True
    prompt_layout = "stable_story"  # a story kept across turns, then history: llama.cpp keeps them cached
    call_options = frozenset({"max_tokens", "stop", "prefill", "adapter", *_SAMPLING_KEYS})
    # forwarded to llama.cpp's server settings (PASSTHROUGH), and default sampling settings
    extra_options = frozenset({*PASSTHROUGH, "top_p", "top_k", "min_p", "repeat_penalty"})

    def __init__(
        self,
        model_path: str | Path | None = None,
        n_ctx: int | None = None,
        n_threads: int | str | None = None,
        n_threads_batch: int | str | None = None,
        n_parallel: int | None = None,
        cache_ram_mib: int | None = None,
        chat_template: str | None = None,
        seed: int = DEFAULT_SEED,
        verbose: bool = False,
        temperature: float | None = None,
        max_tokens: int | None = None,
        sha256: str | None = None,
        model: str | None = None,
        timeout: float | None = None,
        lora_path: str | Path | None = None,
        lora_scale: float = 1.0,
        adapters: Sequence[str | Path] = (),
        port: int | None = None,
        entry: Any = None,
        **options: Any,
    ):
        """Start ``model_path`` (default: the embedded model) in a worker process; ``sha256`` pins any file.

        ``n_ctx`` is each chat's window (default 4096); ``n_parallel`` chats are served at once (default: as
        many windows as a quarter of the free memory holds, up to 4). ``n_threads`` (default ``"auto"``: the
        physical cores but one) and ``n_threads_batch`` (prompt reading; default ``n_threads``) are llama.cpp's.
        ``cache_ram_mib`` bounds the host-memory prompt cache (0: off; off whenever adapters are loaded).
        ``adapters`` are GGUF LoRA files loaded at start (``lora_path`` among them, at ``lora_scale``, applied
        when a call names no adapter). ``timeout`` (seconds) is how long the worker may stay silent before it
        counts as hung. ``port``: the worker's loopback port (default: one the OS picks). ``entry``: the catalogue
        entry (``models.catalog.ModelEntry``) ``model_path`` is, when it is a pulled one. Other keyword
        arguments: ``n_gpu_layers``, ``main_gpu``, ``n_batch``, ``n_ubatch``, ``rope_freq_base``,
        ``rope_freq_scale``, ``n_keep`` (llama.cpp's), and default ``top_p``/``top_k``/``min_p``/``repeat_penalty``.
        """
        self.worker: Worker | None = None
        model_path = model_path or model
        if model_path is None:
            from ...models import BUILTIN
            from ...models.embedded import embedded_model

            self.model_path = embedded_model()
            entry = BUILTIN
            self.budget_hint = dict(EMBEDDED_BUDGET)  # the tiny model's own budgets (arguments win)
        else:
            self.model_path = Path(model_path).expanduser()
            if not self.model_path.is_file():
                raise ModelError(f"GGUF model file not found: {self.model_path}; pass model_path= a .gguf file")
            if sha256:
                from ...models.embedded import verify_file

                verify_file(self.model_path, sha256, "download the file again")
        self.model_entry = entry  # for the language warning and the demo's "model in use"
        if find_spec("xllamacpp") is None:  # a clear error here, not a dead worker
            raise BackendUnavailable(f"the llama_cpp backend needs xllamacpp: {INSTALL_HINT}")
        self.temperature = DEFAULT_LOCAL_TEMPERATURE if temperature is None else temperature
        self.max_tokens, self.seed = max_tokens, seed
        self._sampling = {k: options.pop(k) for k in _SAMPLING_KEYS if k in options}
        self.context_window = _whole("n_ctx", n_ctx, 16) if n_ctx is not None else DEFAULT_LOCAL_CONTEXT_WINDOW
        threads = thread_count("n_threads", DEFAULT_LOCAL_THREADS if n_threads is None else n_threads)
        threads = threads or auto_threads()
        batch = thread_count("n_threads_batch", n_threads_batch) or threads
        parallel = (_whole("n_parallel", n_parallel, 1) if n_parallel is not None
                    else default_parallel(self.model_path, self.context_window))
        self._cache_ram = None if cache_ram_mib is None else _whole("cache_ram_mib", cache_ram_mib, 0)
        self._scales: dict[str, float] = {}  # adapter id (the file's resolved path) -> its scale when chosen
        self.adapters: dict[str, Path] = {}  # adapter id -> file, in the order llama.cpp numbers them
        for path in [*adapters, *([lora_path] if lora_path else [])]:
            self._check_adapter(Path(path).expanduser(), "adapters=" if path != lora_path else "lora_path=")
            adapter_id = str(Path(path).expanduser().resolve())
            self.adapters[adapter_id] = Path(path).expanduser()
            self._scales[adapter_id] = lora_scale if path == lora_path else 1.0
        self.lora_path = Path(lora_path).expanduser() if lora_path else None
        self.default_adapter = str(self.lora_path.resolve()) if self.lora_path else None
        self.spec: dict[str, Any] = {
            "model_path": str(self.model_path), "n_ctx": self.context_window, "n_parallel": parallel,
            "n_threads": threads, "n_threads_batch": batch, "port": 0 if port is None else _whole("port", port, 1),
            "seed": seed, "verbose": verbose, "chat_template": chat_template,
            **{k: v for k, v in options.items() if k in PASSTHROUGH}}
        self.spec.update(cache_ram_mib=self._cache_ram_mib(), lora=[str(p) for p in self.adapters.values()])
        self.worker = Worker(self.spec, self.model_path.name, DEFAULT_LOCAL_TIMEOUT_S if timeout is None else timeout,
                             DEFAULT_LOCAL_START_TIMEOUT_S, verbose)
        weakref.finalize(self, self.worker.close)  # a backend dropped without close() stops its worker too
        self.worker.start()  # loads the model in the child: a bad file or adapter fails there, not here
        self._counter: LlamaCppCounter | None = None
        self._cold = False

    def describe(self) -> str:
        """``qwen2.5-3b (Qwen2.5-3B-Instruct Q4_K_M, local)``, or the file's name for a GGUF of one's own."""
        return super().describe() if self.model_entry is not None else f"{self.model_path.name} (local GGUF)"

    @property
    def n_parallel(self) -> int:
        """Chats the worker serves at once (its slots)."""
        return int(self.spec["n_parallel"])

    @property
    def timeout(self) -> float:
        """Seconds the worker may stay silent (no token, no prompt progress) before it counts as hung."""
        return self.worker.timeout

    @timeout.setter
    def timeout(self, value: float) -> None:
        self.worker.timeout = value  # the next request's (each request sends its own)

    def _cache_ram_mib(self) -> int:
        if not self.adapters:
            return DEFAULT_LOCAL_CACHE_RAM_MIB if self._cache_ram is None else self._cache_ram
        if self._cache_ram:  # llama.cpp issue 30129
            raise InputError(f"cache_ram_mib={self._cache_ram} with LoRA adapters loaded: llama.cpp's host-memory "
                             "prompt cache does not record which adapter computed an entry and restores it under "
                             "another (wrong replies: llama.cpp issue 30129); leave cache_ram_mib out or pass 0")
        return 0

    def _check_adapter(self, path: Path, what: str) -> None:
        """A GGUF LoRA file for this model's architecture; else ``ModelError``/``AdapterMismatch`` naming both."""
        if not path.is_file():
            raise ModelError(f"LoRA adapter file not found: {path}; pass {what} a GGUF adapter "
                             "(chatharuhi train --gguf writes one)")
        try:
            header = gguf_header(path)
        except (OSError, ValueError) as exc:
            raise AdapterError(f"{path}: not a GGUF LoRA adapter ({exc})") from None
        if header.get("general.type") != "adapter" or header.get("adapter.type") != "lora":
            raise AdapterError(f"{path}: a GGUF file but not a LoRA adapter (general.type="
                               f"{header.get('general.type')!r}); chatharuhi export-gguf writes one")
        try:
            arch = gguf_header(self.model_path).get("general.architecture")
        except (OSError, ValueError):
            return  # the worker says what is wrong with the model
        if header.get("general.architecture") != arch:
            raise AdapterMismatch(f"{path}: a LoRA adapter for a {header.get('general.architecture')!r} model, but "
                                  f"{self.model_path.name} is {arch!r}; load the base it was trained for",
                                  adapter_base=str(header.get("general.architecture")), loaded_base=str(arch))

    # -- prompt ---------------------------------------------------------------------------------
    def _call(self, path: str, body: dict[str, Any], stage: str) -> Any:
        """POST ``body`` to the worker's ``path`` (``/tokenize``, ``/apply-template``); a crash is ``WorkerCrashed``."""
        child = self.worker.acquire()
        try:
            with child.wire._errors():
                return child.wire.client.post(path, cast_to=object, body=body)
        except BackendResponseError as exc:
            if exc.status_code is not None and exc.status_code < 500:
                raise BackendError(f"{self.model_path.name}: the chat template or tokenizer rejected the "
                                   f"request: {exc}") from None
            raise self._failure(child, exc, stage) from None
        except BackendError as exc:
            raise self._failure(child, exc, stage) from None
        finally:
            self.worker.release(child)

    def render(self, messages: Sequence[Message]) -> list[int]:
        """The prompt's token ids exactly as the server reads them: its chat template, then its tokenizer."""
        payload = [m.as_dict() if isinstance(m, Message) else dict(m) for m in messages]
        prompt = self._call("/apply-template", {"messages": payload}, "applying the chat template")["prompt"]
        return self._call("/tokenize", {"content": prompt, "add_special": True, "parse_special": True},
                          "tokenizing")["tokens"]

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a bare text (no BOS, special tokens read as text)."""
        return self._call("/tokenize", {"content": text, "add_special": False, "parse_special": False},
                          "tokenizing")["tokens"]

    def token_counter(self) -> LlamaCppCounter:
        """The exact counter for this model and chat template."""
        if self._counter is None:
            self._counter = LlamaCppCounter(self)
        return self._counter

    # -- generation -----------------------------------------------------------------------------
    def stream(self, messages: Sequence[Message], *, info: StreamInfo | None = None,
               **options: Any) -> "Generation":
        """Yield the reply, filling ``info`` (finish reason, usage, the server's timings) when it ends. Options:
        max_tokens, temperature, top_p, top_k, min_p, repeat_penalty, stop, seed, prefill, adapter (an id from
        ``add_adapter``; None: the base model; left out: ``lora_path``'s, if any)."""
        body, wire_options, prefill, stats = self._request(messages, options)
        info = StreamInfo() if info is None else info
        return Generation(chunks(self, body, wire_options, prefill, stats, info), stats)

    async def astream(self, messages: Sequence[Message], *, info: StreamInfo | None = None,
                      **options: Any) -> AsyncIterator[str]:
        """Async twin of ``stream``: the reply streams on the event loop (no thread per request)."""
        body, wire_options, prefill, stats = await asyncio.to_thread(self._request, messages, options)
        info = StreamInfo() if info is None else info
        async for piece in achunks(self, body, wire_options, prefill, stats, info):
            yield piece

    def _request(self, messages: Sequence[Message], options: dict[str, Any]) -> tuple:
        """What to send (messages with the prefill, the OpenAI options, llama.cpp's own fields), checked."""
        self.check_call_options(options)
        adapter = options["adapter"] if "adapter" in options else self.default_adapter
        if adapter is not None and adapter not in self.adapters:
            loaded = ", ".join(self.adapters) or "none"
            raise AdapterError(f"adapter={adapter!r} is not loaded in this llama_cpp backend (loaded: {loaded}); "
                               "load it first with add_adapter(path), or pass adapter=None for the base model")
        prefill = options.get("prefill") or ""
        sent = [m.as_dict() if isinstance(m, Message) else dict(m) for m in messages]
        if prefill:  # the server continues a final assistant turn
            sent.append({"role": "assistant", "content": prefill})
        tokens = len(self.render(sent))
        room = self.context_window - tokens
        if room <= 0:
            raise BudgetError(
                f"the prompt is {tokens} tokens but each chat's window (n_ctx) is {self.context_window}; "
                "raise n_ctx= or send less", part="prompt", tokens=tokens, budget=self.context_window)
        max_tokens = min(options.get("max_tokens") or self.max_tokens or room, room)
        stop = options.get("stop") or []
        sampling = {"temperature": self.temperature, "repeat_penalty": DEFAULT_REPEAT_PENALTY, "seed": self.seed,
                    **self._sampling, **{k: options[k] for k in _SAMPLING_KEYS if options.get(k) is not None}}
        extra = {k: v for k, v in sampling.items() if k not in ("temperature", "top_p")}
        extra.update(return_progress=True, cache_prompt=not self._cold, timings_per_token=False)
        if self.adapters:  # every adapter, every time: an omitted one would keep a slot's last scale
            extra["lora"] = [{"id": i, "scale": self._scales[a] if a == adapter else 0.0}
                             for i, a in enumerate(self.adapters)]
        self._cold = False
        wire_options = {"max_tokens": max_tokens, "temperature": sampling["temperature"], "extra_body": extra,
                        "timeout": self.timeout}
        if sampling.get("top_p") is not None:
            wire_options["top_p"] = sampling["top_p"]
        if stop:
            wire_options["stop"] = [stop] if isinstance(stop, str) else list(stop)
        stats: dict[str, Any] = {"prompt_tokens": tokens, "adapter": adapter}
        return sent, wire_options, prefill, stats

    def reset_cache(self) -> None:
        """Read the next prompt in full, reusing no cached prefix (benchmarks measure cold prefill with it)."""
        self._cold = True

    def _failure(self, child: Child, exc: BackendError, stage: str) -> BackendError:
        """What a failed request on ``child`` means: a crash, a hang, or the error as it came."""
        if isinstance(exc, BackendTimeout):
            return self.worker.hung(child, self.timeout, stage)
        if isinstance(exc, (BackendConnectionError, BackendResponseError)):
            return self.worker.failed(child, stage) or exc
        return exc

    # -- adapters -------------------------------------------------------------------------------
    def add_adapter(self, path: str | Path, scale: float = 1.0) -> str:
        """Load a GGUF LoRA adapter (once per file) and return its id, for ``adapter=``.

        A file that is not a LoRA for this model's architecture is refused here (naming both); one llama.cpp
        rejects (other shapes) is ``AdapterError`` quoting it. An adapter not given at start restarts the
        worker with it: requests in flight finish on the old worker, and the prompt caches start empty."""
        path = Path(path).expanduser()
        self._check_adapter(path, "add_adapter()")
        adapter_id = str(path.resolve())
        if adapter_id in self.adapters:
            return adapter_id
        adapters, scales = {**self.adapters, adapter_id: path}, {**self._scales, adapter_id: scale}
        old = self.adapters
        self.adapters = adapters
        try:
            spec = {**self.spec, "cache_ram_mib": self._cache_ram_mib(), "lora": [str(p) for p in adapters.values()]}
            self.worker.restart(spec)
        except BaseException:
            self.adapters = old
            raise
        self.spec, self._scales = spec, scales
        return adapter_id

    def use_adapter(self, adapter: Any) -> dict[str, Any] | None:
        """Load a character's GGUF adapter (``gguf =``) onto this model; the options select it per call."""
        if adapter.gguf is None:
            return None
        from ...models.adapters import check_base

        check_base(adapter, self.model_path, self.name)
        try:
            return {"adapter": self.add_adapter(adapter.gguf)}
        except AdapterError:
            raise
        except ModelError as exc:
            raise AdapterError(f"character {adapter.name!r}: {exc}") from None

    @property
    def closed(self) -> bool:
        """True once ``close()`` ran (a crashed worker is not closed: the next request starts a fresh one)."""
        return self.worker is None or self.worker.closed

    def close(self) -> None:
        """Stop the worker."""
        if self.worker is not None:
            self.worker.close()
