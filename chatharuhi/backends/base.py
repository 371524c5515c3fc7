"""The backend contract: one required method, ``stream(messages, *, info=None, **options) -> Iterator[str]``.

A blocking reply is the join of the stream; the async twin runs the stream in a worker thread
unless a backend overrides it. A backend that learns how a reply ended (the upstream's finish reason,
its token usage) fills the ``info`` it is given (a ``StreamInfo``); one whose ``stream`` takes no ``info``
is given none (it reports nothing). A backend also says how it counts tokens and how large its
context window is, so the packer can fill the prompt exactly. Everything the rest of the package reads off a
backend is declared on ``Backend`` below, with its default; nothing is set on a backend from outside.

Declared options (nothing is silently ignored): a backend's constructor accepts its named
parameters plus ``extra_options`` (what it forwards through ``**kwargs``, e.g. to llama.cpp's
server settings); any other keyword is ``UnknownOption`` naming the closest one, checked before the
constructor runs, for every subclass (third-party ones too). ``call_options`` lists what
``stream(messages, **options)`` honours; ``check_call_options`` refuses the rest.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator, Sequence

from ..config import DEFAULT_CONTEXT_WINDOW
from ..options import check_options, parameter_names
from ..prompting.tokens import TiktokenCounter, TokenCounter
from ..types import Message

_DONE = object()


@dataclass
class StreamInfo:
    """How a streamed reply ended, as far as the backend knows: filled when the stream is exhausted.

    ``finish_reason``: ``"stop"``, ``"length"`` (cut at ``max_tokens``), ... or None when unknown;
    ``usage``: the upstream's own ``prompt_tokens``/``completion_tokens``/``total_tokens``, or None;
    ``timings``: the upstream's own figures when it reports them (a llama.cpp server: ``cache_n`` prompt
    tokens reused from its cache, ``prompt_n``/``prompt_ms`` read, ``predicted_n``/``predicted_ms``), or None."""

    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    timings: dict[str, Any] | None = None


def _without_info(method: Any) -> Any:
    """``method`` (a ``stream`` or ``astream`` that takes no ``info``) called with ``info`` dropped."""
    import functools

    @functools.wraps(method)
    def wrapped(self: Any, messages: Sequence[Message], *, info: StreamInfo | None = None, **options: Any) -> Any:
        return method(self, messages, **options)

    wrapped.__takes_info__ = True  # type: ignore[attr-defined]
    return wrapped


def _takes_info(method: Any) -> bool:
    import inspect

    if getattr(method, "__takes_info__", False):
        return True
    return "info" in inspect.signature(method).parameters


def _checked_init(cls: type, init: Any) -> Any:
    """``init`` preceded by a check of its keywords against ``cls.accepted_options()``."""
    import functools

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if kwargs and type(self).__init__ is __init__:  # the outermost constructor checks, once
            valid = type(self).accepted_options()
            if valid is not None and not kwargs.keys() <= valid:
                check_options(kwargs, valid, f"{type(self).__name__}()")
        init(self, *args, **kwargs)

    __init__.__strict__ = True  # type: ignore[attr-defined]
    return __init__


class Backend(ABC):
    """A language model that streams a reply to a list of chat messages."""

    name: str = "backend"
    context_window: int = DEFAULT_CONTEXT_WINDOW
    # Budget defaults this backend prefers (story_tokens, history_tokens, reply_reserve); arguments win.
    budget_hint: dict[str, int] = {}
    # Where the packer puts scenes (packing.LAYOUTS): local models with a KV cache want "stable_story", which
    # also turns on story reuse across turns (reuse.py).
    prompt_layout: str = "system"
    # A transcript backend (debug) echoes its prompt: no stop strings, no reply filter.
    transcript: bool = False
    # Whether ``stream`` honours ``prefill=`` (the reply's first words, yielded first): local models.
    supports_prefill: bool = False
    # The catalogue entry of the local model in use (models.catalog.ModelEntry), for the language warning and the
    # web demo's "model in use"; None for a remote model.
    model_entry: Any = None
    # Keywords the constructor forwards through ``**kwargs`` (beyond its named parameters).
    extra_options: frozenset[str] = frozenset()
    # Options ``stream`` honours; None: not declared (the caller cannot check them).
    call_options: frozenset[str] | None = None
    # The default sampling temperature (None: the upstream's own), shown in the demo's settings.
    temperature: float | None = None
    # The fixed seed a local model samples with (None: unseeded); a regenerated reply is given a fresh one.
    seed: int | None = None
    # The upstream's address (remote backends): never shown in a server's error bodies.
    base_url: str | None = None
    # Whether ``close()`` has released this backend (a registry's cached one is then built again).
    closed: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "__strict__", False):
            cls.__init__ = _checked_init(cls, init)  # type: ignore[method-assign]
        for name in ("stream", "astream"):  # a backend written without ``info`` is simply given none
            method = cls.__dict__.get(name)
            if method is not None and not _takes_info(method):
                setattr(cls, name, _without_info(method))

    @classmethod
    def accepted_options(cls) -> frozenset[str] | None:
        """Every keyword the constructor accepts, or None when it forwards undeclared ``**kwargs``."""
        names, takes_any = parameter_names(cls.__init__)
        extra = cls.extra_options
        if takes_any and not extra:
            return frozenset() if cls.__init__ is object.__init__ else None
        return names | frozenset(extra)

    def check_call_options(self, options: dict[str, Any]) -> None:
        """Refuse a per-call option this backend does not honour (``UnknownOption``)."""
        if self.call_options is not None and not options.keys() <= self.call_options:
            check_options(options, self.call_options, f"{type(self).__name__}.stream()")

    @abstractmethod
    def stream(self, messages: Sequence[Message], *, info: StreamInfo | None = None, **options: Any) -> Iterator[str]:
        """Yield the reply in chunks, filling ``info`` when it ends (if given and known). Options: temperature,
        max_tokens, stop (list of strings)."""

    def complete(self, messages: Sequence[Message], **options: Any) -> str:
        """The whole reply: the join of the stream."""
        return "".join(self.stream(messages, **options))

    async def astream(self, messages: Sequence[Message], *, info: StreamInfo | None = None,
                      **options: Any) -> AsyncIterator[str]:
        """Async twin of ``stream``: runs the blocking stream in a worker thread."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def pump() -> None:
            try:
                for chunk in self.stream(messages, info=info, **options):
                    if stop.is_set():
                        break
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)
            except BaseException as exc:  # handed to the consumer, raised there
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        worker = threading.Thread(target=pump, daemon=True)
        worker.start()
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()

    async def acomplete(self, messages: Sequence[Message], **options: Any) -> str:
        """Async twin of ``complete``."""
        return "".join([chunk async for chunk in self.astream(messages, **options)])

    def use_adapter(self, adapter: Any) -> dict[str, Any] | None:
        """Make a character's LoRA adapter (``chatharuhi.models.adapters.CharacterAdapter``) ready and return the
        per-call options that select it; ``None``: this backend cannot apply adapters."""
        return None

    def describe(self) -> str:
        """A short human label of the model this backend runs (the demo's and the CLI's "Model: ..." line)."""
        if self.model_entry is not None:
            return f"{self.model_entry.name} ({self.model_entry.title}, local)"
        return self.name

    def token_counter(self) -> TokenCounter:
        """The counter that matches what this backend is sent (tiktoken unless overridden)."""
        return TiktokenCounter()

    def close(self) -> None:
        """Release connections or model memory; the default does nothing."""
