"""The ``llama_cpp`` backend: any GGUF file, in process, through llama-cpp-python (the ``[local]`` extra).

Prompts are rendered by llama-cpp-python's own chat handler (the GGUF's chat template, or a named
``chat_format``): we call that handler with a recorder standing in for the model, so the token ids
we count, and then generate from, are exactly those ``create_chat_completion`` would send. That
gives an exact token counter and lets a reply be *prefilled*: ``stream(..., prefill="Holmes:「",
stop=["」"])`` appends the prefill to the assistant turn, yields it as the first chunk, and lets
the model continue from there. Small models stay in character far better that way.

The model runs in a worker process (``backends/worker.py``): a native crash (a segfault in ggml, an
OOM kill) is a ``WorkerCrashed`` error for that request, and the next one starts a fresh worker.
The parent keeps a vocabulary-only copy of the model (no weights, no matrix code) to render and count
prompts, loaded only after the worker has loaded the same file without trouble.

GGUF LoRA adapters load onto the one model in the worker (``add_adapter``; ``lora_path=`` is the
default adapter) and a call picks one with the ``adapter`` option, so characters with their own
adapters share one base model (``use_adapter``).

With no ``model_path`` the backend runs the embedded default (``backends/embedded.py``), which is
registered as ``embedded``.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Sequence

from ...config import (
    DEFAULT_LOCAL_CONTEXT_WINDOW,
    DEFAULT_LOCAL_START_TIMEOUT_S,
    DEFAULT_LOCAL_TEMPERATURE,
    DEFAULT_LOCAL_THREADS,
    DEFAULT_LOCAL_TIMEOUT_S,
    DEFAULT_REPEAT_PENALTY,
    LLAMA_CPP_INSTALL,
)
from ...errors import AdapterError, BackendError, BackendUnavailable, BudgetError, InputError, ModelError
from ...options import parameter_names
from ...types import Message
from ..base import Backend, StreamInfo
from ..serial import Chunks
from .render import CONSTRAINING_SETTINGS, LlamaCppCounter, _Captured, _Recorder
from .worker import Worker, physical_cores

INSTALL_HINT = f"{LLAMA_CPP_INSTALL} && pip install 'chatharuhi[embedded]'  (builds from source: 5-30 minutes)"
DEFAULT_SEED = 0
_SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed")


@lru_cache(maxsize=1)
def llama_parameter_names() -> frozenset[str] | None:
    """``llama_cpp.Llama.__init__``'s keywords, read from its source (llama-cpp is not imported); None if absent."""
    import ast
    from importlib.util import find_spec

    try:
        spec = find_spec("llama_cpp")
        folder = Path(spec.origin).parent if spec and spec.origin else None
        tree = ast.parse((folder / "llama.py").read_text(encoding="utf-8")) if folder else None
    except (ImportError, ValueError, OSError, SyntaxError):
        return None
    for node in ast.walk(tree) if tree else ():
        if isinstance(node, ast.ClassDef) and node.name == "Llama":
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    args = item.args
                    return frozenset(a.arg for a in [*args.args, *args.kwonlyargs] if a.arg != "self")
    return None


def _import_llama():
    try:
        import llama_cpp
    except ImportError as exc:
        raise BackendUnavailable(f"the llama_cpp backend needs llama-cpp-python: {INSTALL_HINT} ({exc})") from None
    return llama_cpp


def _drop_log(level: int, text: bytes, user_data: Any) -> None:
    """A llama.cpp log callback that drops everything."""


_quiet_log = None


def _install_quiet_log() -> None:
    global _quiet_log
    if _quiet_log is None:
        import llama_cpp

        _quiet_log = llama_cpp.llama_log_callback(_drop_log)


# Completion arguments a chat handler may set that change what may be generated (not merely how it is sampled).
def thread_count(name: str, value: Any) -> int | None:
    """A thread option checked: a positive int, or None for ``"auto"``/unset; anything else is ``InputError``."""
    if value is None or value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name}={value!r}: pass a number of threads (1 or more) or 'auto' (the physical cores "
                         "other programs leave free, chosen before each generation)")
    return value


class LlamaCppBackend(Backend):
    """A GGUF model run in process by llama-cpp-python; streams, honours stop strings and prefill."""

    name = "llama_cpp"
    supports_prefill = True
    prompt_layout = "stable_story"  # a story kept across turns, then history: llama.cpp keeps them cached
    call_options = frozenset({"max_tokens", "stop", "prefill", "adapter", *_SAMPLING_KEYS})

    @classmethod
    def accepted_options(cls) -> frozenset[str] | None:
        """Our parameters plus every ``llama_cpp.Llama`` parameter (forwarded to it); None without llama-cpp."""
        names, _ = parameter_names(cls.__init__)
        llama = llama_parameter_names()
        return None if llama is None else names | llama

    def __init__(
        self,
        model_path: str | Path | None = None,
        n_ctx: int | None = None,
        n_threads: int | str | None = None,
        chat_format: str | None = None,
        seed: int = DEFAULT_SEED,
        verbose: bool = False,
        temperature: float | None = None,
        max_tokens: int | None = None,
        sha256: str | None = None,
        model: str | None = None,
        timeout: float | None = None,
        lora_path: str | Path | None = None,
        lora_scale: float = 1.0,
        **options: Any,
    ):
        """Load ``model_path`` (default: the embedded model) in a worker process; ``sha256`` pins any file.

        ``lora_path`` is a GGUF LoRA adapter (at ``lora_scale``) that every call without an ``adapter``
        option applies.
        ``n_threads`` (default ``"auto"``): before each generation, the physical cores other programs leave
        free (at least 1; ``n_threads_batch`` follows it unless given); a number fixes it. ``timeout``
        (seconds) is how long the worker may stay silent (no token, no prefill progress) before it
        counts as hung. Other keyword arguments go
        to ``llama_cpp.Llama`` (``n_gpu_layers``, ``n_batch``, ...); one that neither accepts is
        ``UnknownOption`` (see ``accepted_options``).
        """
        model_path = model_path or model
        if model_path is None:
            from ...models.embedded import embedded_model

            self.model_path = embedded_model()
        else:
            self.model_path = Path(model_path).expanduser()
            if not self.model_path.is_file():
                raise ModelError(f"GGUF model file not found: {self.model_path}; pass model_path= a .gguf file")
            if sha256:
                from ...models.embedded import verify_file

                verify_file(self.model_path, sha256, "download the file again")
        self.lora_path = Path(lora_path).expanduser() if lora_path else None
        if self.lora_path is not None:
            _adapter_file(self.lora_path, "lora_path=")  # before the model loads
        self.temperature = DEFAULT_LOCAL_TEMPERATURE if temperature is None else temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self.llm = None
        for key in ("base_url", "api_key", "max_retries", "extra_body", "client"):
            options.pop(key, None)
        self._sampling = {k: options.pop(k) for k in _SAMPLING_KEYS if k in options}
        _import_llama()  # a missing llama-cpp-python is a clear error here, not a dead worker
        auto = thread_count("n_threads", DEFAULT_LOCAL_THREADS if n_threads is None else n_threads)
        batch = thread_count("n_threads_batch", options.pop("n_threads_batch", None))
        threads = physical_cores() if auto is None else auto
        spec = {"model_path": str(self.model_path), "n_ctx": n_ctx or DEFAULT_LOCAL_CONTEXT_WINDOW,
                "n_threads": threads, "n_threads_batch": batch or threads,
                "chat_format": chat_format, "seed": seed, "verbose": verbose, **options}
        self.worker = Worker(spec, self.model_path.name, DEFAULT_LOCAL_TIMEOUT_S if timeout is None else timeout,
                             DEFAULT_LOCAL_START_TIMEOUT_S, verbose, auto_threads=auto is None,
                             auto_threads_batch=auto is None and batch is None)
        info = self.worker.start()  # loads the model in the child: a bad file fails there, not here
        self.context_window = int(info["n_ctx"])
        self.llm = self._vocabulary(spec)
        self._counter: LlamaCppCounter | None = None
        self._stop_ids: list[int] | None = None
        self._forget = False
        self.adapters: dict[str, Path] = {}  # adapter id (the file's resolved path) -> file, loaded in the worker
        self.default_adapter: str | None = None  # what a call without ``adapter=`` applies
        if self.lora_path is not None:
            try:
                self.default_adapter = self.add_adapter(self.lora_path, lora_scale)
            except BaseException:
                self.close()
                raise

    def _vocabulary(self, spec: dict) -> Any:
        """A weightless copy of the model for the chat template and the tokenizer (safe: no matrix code runs)."""
        llama_cpp = _import_llama()
        from llama_cpp import _logger

        # A weightless model "trained" on 0 tokens makes llama.cpp warn about n_ctx on stderr, and
        # llama-cpp-python shows warnings even when not verbose: keep them out while it loads.
        _install_quiet_log()
        llama_cpp.llama_log_set(_quiet_log, ctypes.c_void_p(0))
        try:
            return llama_cpp.Llama(model_path=spec["model_path"], vocab_only=True, n_ctx=spec["n_ctx"],
                                   chat_format=spec["chat_format"], verbose=False)
        except ValueError as exc:
            self.worker.close()
            raise ModelError(f"{self.model_path}: llama.cpp cannot read its vocabulary ({exc})") from None
        finally:
            llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))

    # -- prompt ---------------------------------------------------------------------------------
    def _handler(self) -> Any:
        llm = self.llm
        if llm.chat_handler is not None:
            return llm.chat_handler
        handler = llm._chat_handlers.get(llm.chat_format)
        if handler is None:
            from llama_cpp import llama_chat_format

            handler = llama_chat_format.get_chat_completion_handler(llm.chat_format)
        return handler

    def render(self, messages: Sequence[Message]) -> _Captured:
        """The prompt token ids, stop strings and stopping criteria llama-cpp's chat handler would use."""
        payload = [m.as_dict() if isinstance(m, Message) else dict(m) for m in messages]
        try:
            self._handler()(llama=_Recorder(self.llm), messages=payload)
        except _Captured as captured:
            constraints = sorted(k for k in CONSTRAINING_SETTINGS if captured.settings.get(k) is not None)
            if constraints:  # the worker samples freely: a chat format that constrains output cannot be honoured
                raise BackendError(f"{self.model_path.name}: its chat format ({self.llm.chat_format}) constrains "
                                   f"generation with {', '.join(constraints)}, which chatharuhi does not apply; "
                                   "pass chat_format= naming a plain chat template") from None
            return captured
        except Exception as exc:  # a template's raise_exception, a jinja error
            raise BackendError(f"{self.model_path.name}: the chat template rejected the messages: {exc}") from exc
        raise BackendError(f"{self.model_path.name}: the chat handler did not call create_completion")

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a bare text."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def token_counter(self) -> LlamaCppCounter:
        """The exact counter for this model and chat template."""
        if self._counter is None:
            self._counter = LlamaCppCounter(self)
        return self._counter

    # -- generation -----------------------------------------------------------------------------
    def stream(self, messages: Sequence[Message], **options: Any) -> Iterator[str]:
        """Yield the reply. Options: max_tokens, temperature, top_p, top_k, stop, seed, prefill, adapter
        (an id from ``add_adapter``; None: the base model; left out: ``lora_path``'s, if any)."""
        return self._generation(messages, None, **options)

    def _generation(self, messages: Sequence[Message], info: StreamInfo | None, **options: Any) -> "Generation":
        self.check_call_options(options)
        adapter = options["adapter"] if "adapter" in options else self.default_adapter
        if adapter is not None and adapter not in self.adapters:
            loaded = ", ".join(self.adapters) or "none"
            raise AdapterError(f"adapter={adapter!r} is not loaded in this llama_cpp backend (loaded: {loaded}); "
                               "load it first with add_adapter(path), or pass adapter=None for the base model")
        prompt = self.render(messages)
        prefill = options.get("prefill") or ""
        tokens = prompt.tokens + (self.tokenize(prefill) if prefill else [])
        room = self.context_window - len(tokens)
        if room <= 0:
            raise BudgetError(
                f"the prompt is {len(tokens)} tokens but the model's window (n_ctx) is {self.context_window}; "
                "raise n_ctx= or send less", part="prompt", tokens=len(tokens), budget=self.context_window)
        max_tokens = options.get("max_tokens") or self.max_tokens or room
        stop = options.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        params = {"temperature": self.temperature, "repeat_penalty": DEFAULT_REPEAT_PENALTY, "seed": self.seed,
                  **self._sampling, **{k: options[k] for k in _SAMPLING_KEYS if options.get(k) is not None}}
        request = {"tokens": tokens, "max_tokens": min(max_tokens, room), "stop": stop + prompt.stop,
                   "stop_ids": self._stop_token_ids(prompt.stopping_criteria), "params": params,
                   "reset": self._forget, "adapter": adapter}
        self._forget = False
        return Generation(self.worker, request, prefill, info)

    def stream_with_info(self, messages: Sequence[Message], info: StreamInfo, **options: Any) -> Iterator[str]:
        """``stream``, filling ``info.finish_reason`` ("stop" or "length") from the worker when it ends."""
        return self._generation(messages, info, **options)

    def reset_cache(self) -> None:
        """Forget the KV cache: the next prompt is read in full (benchmarks measure cold prefill with it)."""
        self._forget = True

    def _stop_token_ids(self, criteria: Any) -> list[int]:
        """The token ids at which the chat handler's stopping criteria end a reply (probed once per backend)."""
        if not criteria:
            return []
        if self._stop_ids is None:
            try:
                self._stop_ids = [t for t in range(self.llm.n_vocab()) if any(c([t], None) for c in criteria)]
            except Exception as exc:  # a custom handler whose criteria read the logits
                raise BackendError(f"{self.model_path.name}: the chat handler's stopping criteria cannot run in "
                                   f"the model's worker process ({exc})") from exc
        return self._stop_ids

    def add_adapter(self, path: str | Path, scale: float = 1.0) -> str:
        """Load a GGUF LoRA adapter onto the model (once per file) and return its id, for ``adapter=``.

        A missing file, or one llama.cpp rejects (another architecture, other shapes), is ``ModelError``
        quoting llama.cpp. The worker loads it again if it has to restart.
        """
        path = Path(path).expanduser()
        _adapter_file(path, "add_adapter()")
        adapter_id = str(path.resolve())
        if adapter_id not in self.adapters:
            self.worker.load_adapter(adapter_id, adapter_id, scale)  # in turn with generations in flight
            self.adapters[adapter_id] = path
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
        worker = getattr(self, "worker", None)
        return worker is None or worker.closed

    def close(self) -> None:
        """Stop the worker and free the vocabulary copy."""
        worker = getattr(self, "worker", None)
        if worker is not None:
            worker.close()
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None and hasattr(llm, "close"):
            llm.close()


def _adapter_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise ModelError(f"LoRA adapter file not found: {path}; pass {what} a GGUF adapter "
                         "(chatharuhi train --gguf writes one)")


def _chunks(worker: Worker, request: dict, prefill: str, stats: dict[str, Any],
            info: StreamInfo | None) -> Iterator[str]:
    if prefill:
        yield prefill
    yield from worker.results(worker.submit(request, stats=stats))
    if info is not None:  # usage stays None: llama-cpp's streamed chunks do not report it
        info.finish_reason = stats.get("finish_reason")


class Generation(Chunks):
    """A reply being generated in the worker: iterate it for chunks; ``stats`` holds the worker's figures.

    ``stats`` (filled as it streams): prompt_tokens, reused_tokens (read from llama.cpp's KV cache, not
    re-read), prefill_tokens, prefill_s, decode_tokens, first_token_s, total_s.
    """

    def __init__(self, worker: Worker, request: dict, prefill: str, info: StreamInfo | None = None):
        stats: dict[str, Any] = {}
        super().__init__(_chunks(worker, request, prefill, stats, info), stats)
