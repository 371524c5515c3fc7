"""The ``openai`` backend: any OpenAI-compatible chat API, through the official ``openai`` SDK.

Besides OpenAI it talks to local servers; point ``base_url`` (or ``OPENAI_BASE_URL``) at:

    vLLM               http://localhost:8000/v1
    Ollama             http://localhost:11434/v1
    llama.cpp server   http://localhost:8080/v1

Settings come from the keyword arguments, else the environment read when the backend is built
(``OPENAI_API_KEY``, ``OPENAI_BASE_URL`` or the older ``OPENAI_API_BASE``, ``CHATHARUHI_MODEL``), else the
defaults in ``config``.
Local servers need no key (a placeholder is sent); api.openai.com without one is ``MissingAPIKey``.

Retries are the SDK's own: ``max_retries`` is handed to the client, which retries connection
errors, timeouts and 408/409/429/5xx answers with exponential backoff (0.5 s doubling to 8 s, with
jitter, or the server's ``Retry-After``). SDK errors become chatharuhi's typed ``BackendError``s.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from contextlib import contextmanager, suppress
from types import SimpleNamespace
from typing import Any, AsyncIterator, Iterator, Sequence
from urllib.parse import urlparse

from ..config import (
    DEFAULT_CONTEXT_WINDOW,
    DEFAULT_MAX_RETRIES,
    DEFAULT_OPENAI_MODEL,
    DEFAULT_TIMEOUT_S,
    ENV_MODEL,
    ENV_OPENAI_API_KEY,
    openai_base_url_from_env,
)
from ..errors import BackendConnectionError, BackendError, BackendResponseError, BackendTimeout, MissingAPIKey
from ..prompting.tokens import TiktokenCounter, TokenCounter
from ..types import Message
from .base import Backend, StreamInfo

OPENAI_BASE_URL = "https://api.openai.com/v1"
PLACEHOLDER_API_KEY = "not-needed"  # vLLM, Ollama and llama.cpp accept any key
ASYNC_POOL_SHARDS = 8  # async clients (connection pools) per backend and event loop, used in turn

# Context windows of known OpenAI models, longest prefix first so "gpt-4o" is not read as "gpt-4".
KNOWN_CONTEXT_WINDOWS = (
    ("gpt-4o", 128_000),
    ("gpt-4.1", 128_000),
    ("gpt-4-turbo", 128_000),
    ("gpt-3.5-turbo", 16_385),
    ("gpt-4", 8_192),
)
_OPTION_KEYS = ("temperature", "max_tokens", "top_p", "stop")
_REQUEST_KEYS = ("timeout", "max_retries", "api_key")  # per call, of the request rather than the body
MAX_STOP = 4  # stop sequences OpenAI's API accepts


def _usage(usage: Any) -> dict[str, int] | None:
    """The SDK's usage object as ``{"prompt_tokens", "completion_tokens", "total_tokens"}``."""
    try:
        prompt, completion = int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0)
    except (AttributeError, TypeError, ValueError):
        return None
    total = getattr(usage, "total_tokens", None)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": int(total) if total is not None else prompt + completion}


def known_context_window(model: str) -> int:
    """The context window of a known OpenAI model, else ``DEFAULT_CONTEXT_WINDOW``."""
    name = model.lower().rsplit("/", 1)[-1]
    for prefix, window in KNOWN_CONTEXT_WINDOWS:
        if name == prefix or name.startswith(prefix + "-"):
            return window
    return DEFAULT_CONTEXT_WINDOW


def _is_transport_error(exc: BaseException) -> bool:
    """An httpx/httpcore error (older SDKs let these escape from a stream being read)."""
    roots = {cls.__module__.split(".")[0] for cls in type(exc).__mro__}
    return bool(roots & {"httpx", "httpx2", "httpcore", "httpcore2"})


def _translate(exc: Exception, base_url: str, timeout: float, streaming: bool = False) -> BackendError | None:
    """Map an SDK or transport error to chatharuhi's error tree, saying what to check; None for others."""
    import openai

    early = "stream ended early: " if streaming else ""
    if isinstance(exc, openai.APITimeoutError):
        return BackendTimeout(f"{early}{base_url} did not answer within {timeout} s; raise timeout= or check it")
    if isinstance(exc, openai.APIConnectionError):
        what = "the connection dropped" if streaming else "cannot connect (is the server running?)"
        return BackendConnectionError(f"{early}{base_url}: {what}: {exc.__cause__ or exc}")
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        detail = body.get("message") or exc.message
        if isinstance(exc, openai.AuthenticationError):
            return BackendResponseError(f"{base_url} rejected the API key (401), check OPENAI_API_KEY: {detail}", 401)
        return BackendResponseError(f"{base_url} answered {exc.status_code}: {detail}", exc.status_code)
    if isinstance(exc, openai.APIError):
        return BackendResponseError(f"{early}{base_url} reported an error: {exc.message}")
    if _is_transport_error(exc):
        if "Timeout" in type(exc).__name__:  # httpx's ReadTimeout escapes from a stream being read
            return BackendTimeout(f"{early}{base_url} sent nothing for {timeout} s; raise timeout= or check it")
        return BackendConnectionError(f"{early}{base_url}: {type(exc).__name__}: {exc}")
    return BackendError(f"{base_url}: {exc}") if isinstance(exc, openai.OpenAIError) else None


class OpenAIBackend(Backend):
    """Streams chat replies from an OpenAI-compatible API (OpenAI, vLLM, Ollama, llama.cpp server)."""

    name = "openai"
    call_options = frozenset({*_OPTION_KEYS, *_REQUEST_KEYS, "model", "extra_body"})

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        top_p: float | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        context_window: int | None = None,
        client: Any = None,
        async_client: Any = None,
        extra_body: dict[str, Any] | None = None,
        stream_usage: bool = True,
        max_stop: int | None = MAX_STOP,
    ):
        self.model = model or os.environ.get(ENV_MODEL) or DEFAULT_OPENAI_MODEL
        self.base_url = (base_url or openai_base_url_from_env() or OPENAI_BASE_URL).rstrip("/")
        key = api_key or os.environ.get(ENV_OPENAI_API_KEY)
        if not key and client is None and urlparse(self.base_url).hostname == "api.openai.com":
            raise MissingAPIKey(f"No API key: pass api_key= or set {ENV_OPENAI_API_KEY}")
        self.api_key = key or PLACEHOLDER_API_KEY
        self.temperature, self.max_tokens, self.top_p = temperature, max_tokens, top_p
        self.timeout, self.max_retries = timeout, max_retries
        self.extra_body = dict(extra_body or {})
        self.max_stop = max_stop  # stop strings sent (OpenAI takes 4); None: all of them (a llama.cpp server)
        # ask for the usage chunk (stream_options.include_usage); False for an old server that refuses it
        self.stream_usage = stream_usage
        self.context_window = context_window or known_context_window(self.model)
        self._client, self._owns_client = client, client is None
        self._async_client = async_client  # injected; else ours, ASYNC_POOL_SHARDS of them used in turn
        self._async_clients: list[Any] = []
        self._turn = itertools.count()
        self._async_loop: asyncio.AbstractEventLoop | None = None  # the loop our own async clients belong to

    def _new_client(self, kind: str, http_client: Any = None) -> Any:
        import openai

        factory = getattr(openai, kind)  # OpenAI or AsyncOpenAI; the SDK does the retrying
        return factory(api_key=self.api_key, base_url=self.base_url, timeout=self.timeout, max_retries=self.max_retries,
                       http_client=http_client)

    @property
    def client(self) -> Any:
        """The ``openai.OpenAI`` client, built on first use unless one was injected."""
        if self._client is None:
            self._client = self._new_client("OpenAI")
        return self._client

    async def _aclient(self) -> Any:
        """An ``openai.AsyncOpenAI`` client; ours are rebuilt per event loop, as their pools are bound to one.

        Ours are several, used in turn: a connection pool looks at every idle connection of its own on each
        request, so one pool serving hundreds of streams spends more time looking than sending."""
        if self._async_client is not None:  # injected
            return self._async_client
        loop = asyncio.get_running_loop()
        if self._async_loop is not loop:
            # Close stale clients now: left to the garbage collector they would try to close
            # connections of a finished loop from inside this one, and log "Event loop is closed".
            for stale in self._async_clients:
                with suppress(Exception):
                    await stale.close()
            import ssl

            import openai

            trust = ssl.create_default_context()  # loaded once (~60 ms), not once per pool
            self._async_clients = [self._new_client("AsyncOpenAI", openai.DefaultAsyncHttpxClient(verify=trust))
                                   for _ in range(ASYNC_POOL_SHARDS)]
            self._async_loop = loop
        return self._async_clients[next(self._turn) % ASYNC_POOL_SHARDS]

    def _params(self, messages: Sequence[Message], options: dict[str, Any]) -> dict[str, Any]:
        self.check_call_options(options)
        params: dict[str, Any] = {
            "model": options.get("model") or self.model,
            "messages": [m.as_dict() if isinstance(m, Message) else dict(m) for m in messages],
        }
        for key in _OPTION_KEYS:
            value = options.get(key, getattr(self, key, None))
            if value is not None:
                params[key] = value
        if self.max_stop is not None and len(params.get("stop") or ()) > self.max_stop:
            # OpenAI takes at most 4: the caller's come first; a character's own stops beyond them are
            # its user's line starts, which the reply filter cuts at anyway
            params["stop"] = params["stop"][:self.max_stop]
        extra = {**self.extra_body, **(options.get("extra_body") or {})}  # this call's fields win
        if extra:
            params["extra_body"] = extra
        return params

    @staticmethod
    def _for_call(client: Any, options: dict[str, Any]) -> Any:
        """``client`` with this call's own timeout, retries or key (the SDK's ``with_options``), if any."""
        given = {k: options[k] for k in _REQUEST_KEYS if options.get(k) is not None}
        return client.with_options(**given) if given else client

    @contextmanager
    def _errors(self, streaming: bool = False, timeout: float | None = None) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            error = _translate(exc, self.base_url, timeout or self.timeout, streaming)
            if error is None:
                raise
            raise error from exc

    @staticmethod
    def _read(chunk: Any, info: StreamInfo) -> tuple[str, bool]:
        """The text of one stream chunk (first choice only) and whether it carried a finish reason; the
        finish reason and the upstream's usage (the chunk ``include_usage`` adds) go into ``info``."""
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            info.usage = _usage(usage)
        timings = getattr(chunk, "timings", None)  # a llama.cpp server's own figures (an extra field)
        if isinstance(timings, dict):
            info.timings = timings
        choice = next((c for c in chunk.choices or () if c.index in (0, None)), None)
        if choice is None:  # e.g. the usage chunk at the end
            return "", False
        if choice.finish_reason:
            info.finish_reason = str(choice.finish_reason)
        return (choice.delta.content if choice.delta else None) or "", bool(choice.finish_reason)

    @staticmethod
    def _read_raw(chunk: Any, info: StreamInfo) -> tuple[str, bool]:
        """``_read`` for a chunk left as the JSON object the server sent."""
        if not isinstance(chunk, dict):
            return "", False
        if isinstance(chunk.get("usage"), dict):
            info.usage = _usage(SimpleNamespace(**chunk["usage"]))
        if isinstance(chunk.get("timings"), dict):
            info.timings = chunk["timings"]
        choice = next((c for c in chunk.get("choices") or () if isinstance(c, dict) and c.get("index") in (0, None)),
                      None)
        if choice is None:  # e.g. the usage chunk at the end
            return "", False
        if choice.get("finish_reason"):
            info.finish_reason = str(choice["finish_reason"])
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else None
        return (text if isinstance(text, str) else ""), bool(choice.get("finish_reason"))

    def describe(self) -> str:
        """``gpt-4o-mini via https://api.openai.com/v1``."""
        return f"{self.model} via {self.base_url}"

    def stream(self, messages: Sequence[Message], *, info: StreamInfo | None = None,
               **options: Any) -> Iterator[str]:
        """Yield the reply as the server streams it, recording the upstream's finish reason and usage in ``info``.
        Options: temperature, max_tokens, stop, top_p, model, extra_body (fields added to this request's JSON
        body, over the backend's own ``extra_body``), and the request's own timeout, max_retries and api_key."""
        info = StreamInfo() if info is None else info
        params = self._params(messages, options)
        if self.stream_usage:
            params["stream_options"] = {"include_usage": True}
        with self._errors(timeout=options.get("timeout")):
            response = self._for_call(self.client, options).chat.completions.create(stream=True, **params)
        finished = False
        try:
            with self._errors(streaming=True, timeout=options.get("timeout")):
                for chunk in response:
                    piece, done = self._read(chunk, info)
                    finished = finished or done
                    if piece:
                        yield piece
        finally:
            response.close()
        if not finished:  # a clean EOF without a finish_reason is a dropped stream too
            raise BackendConnectionError(f"stream ended early: {self.base_url} closed it before a finish_reason")

    def complete(self, messages: Sequence[Message], **options: Any) -> str:
        """The whole reply from one non-streaming request."""
        with self._errors(timeout=options.get("timeout")):
            response = self._for_call(self.client, options).chat.completions.create(stream=False,
                                                                                   **self._params(messages, options))
        if not response.choices:
            raise BackendResponseError(f"{self.base_url} answered with no choices")
        return response.choices[0].message.content or ""

    async def astream(self, messages: Sequence[Message], *, info: StreamInfo | None = None,
                      **options: Any) -> AsyncIterator[str]:
        """Async twin of ``stream``, run on the event loop.

        The request goes through the client's own ``post`` (its connection pool, retries, error types
        and SSE decoding) with the body already in wire form and chunks kept as plain dicts: the SDK's
        per-request parameter transform and per-chunk model building were most of a server's CPU."""
        import openai

        info = StreamInfo() if info is None else info
        params = self._params(messages, options)
        if self.stream_usage:
            params["stream_options"] = {"include_usage": True}
        extra = params.pop("extra_body", {})  # what the SDK would merge into the JSON body
        body = {**params, **extra, "stream": True}
        with self._errors(timeout=options.get("timeout")):
            client = self._for_call(await self._aclient(), options)
            response = await client.post("/chat/completions", cast_to=object, body=body, stream=True,
                                         stream_cls=openai.AsyncStream[object])
        finished = False
        try:
            with self._errors(streaming=True, timeout=options.get("timeout")):
                async for chunk in response:
                    piece, done = self._read_raw(chunk, info)
                    finished = finished or done
                    if piece:
                        yield piece
        finally:
            await response.close()
        if not finished:
            raise BackendConnectionError(f"stream ended early: {self.base_url} closed it before a finish_reason")

    def use_adapter(self, adapter: Any) -> dict[str, Any] | None:
        """A served adapter is a model name (vLLM ``--lora-modules name=path``): each call asks for it."""
        return {"model": adapter.served_name} if adapter.served_name else None

    def token_counter(self) -> TokenCounter:
        """tiktoken with the model's encoding."""
        return TiktokenCounter(model=self.model)

    def close(self) -> None:
        """Close the HTTP connections of the client we built (an injected client is left open)."""
        if self._owns_client and self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """Close the clients we built, the async one too (call it in the loop that used ``astream``)."""
        self.close()
        for client in self._async_clients:
            await client.close()
        self._async_clients, self._async_loop = [], None
