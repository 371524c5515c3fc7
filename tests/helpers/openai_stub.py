"""A real OpenAI-compatible HTTP server for tests, run in-process on 127.0.0.1.

It speaks the wire format the official ``openai`` SDK parses: ``POST /v1/chat/completions``
(streamed as server-sent events, or one JSON body with usage), ``GET /v1/models`` and
``POST /v1/embeddings`` (deterministic unit vectors from a hash of each input).

    with StubOpenAIServer(reply="你好") as stub:
        backend = OpenAIBackend(base_url=stub.base_url, max_retries=0)
        assert backend.complete([...]) == "你好"
        assert stub.requests[-1].body["model"] == backend.model

Behaviour is set by attributes, changeable between requests:

- ``reply``: the text to answer, or ``callable(body) -> str``;
- ``mode``: ``"ok"``; ``"error"`` (``status`` with an OpenAI-style JSON error body);
  ``"drop"`` (stream ``drop_after`` content chunks, then close the socket without the final
  chunk or ``[DONE]``); ``"slow"`` (wait ``delay`` seconds, then answer as ``"ok"``);
- ``fail_times``: answer the first n POSTs with ``fail_status`` before behaving as ``mode``;
- ``retry_after_ms``: sent as ``retry-after-ms`` on error answers; the SDK then waits that long
  instead of its own backoff (about 0.5 s and up), which keeps retry tests fast;
- ``send_finish``: False leaves out the chunk carrying ``finish_reason`` (``[DONE]`` still comes),
  for clients that must notice a reply that never said it was finished;
- ``chunk_size`` (characters per streamed chunk), ``chunk_delay`` (seconds between streamed chunks),
  ``embedding_dim``, ``model``.

A request's ``stop`` strings cut the reply where they occur and ``max_tokens`` cuts it to that many
characters (``finish_reason: "length"``), as a real server would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

Reply = str | Callable[[dict], str]


@dataclass
class StubRequest:
    """One request the stub received: method, path, lower-cased headers and the JSON body."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


def embed_text(text: str, dim: int = 8) -> list[float]:
    """The stub's deterministic unit vector for ``text``."""
    digest = b""
    counter = 0
    while len(digest) < dim * 2:
        digest += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    raw = [int.from_bytes(digest[2 * i : 2 * i + 2], "big") / 32767.5 - 1.0 for i in range(dim)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


class StubOpenAIServer:
    """An OpenAI-compatible server on a free local port; use as a context manager."""

    def __init__(
        self,
        reply: Reply = "你好，我是凉宫春日。Nice to meet you!",
        *,
        mode: str = "ok",
        status: int = 500,
        error_message: str = "stub error",
        chunk_size: int = 4,
        chunk_delay: float = 0.0,
        fail_times: int = 0,
        fail_status: int = 500,
        retry_after_ms: int | None = None,
        delay: float = 5.0,
        drop_after: int = 2,
        send_finish: bool = True,
        embedding_dim: int = 8,
        model: str = "stub-model",
    ):
        self.reply = reply
        self.ignore_max_tokens = False  # a misbehaving upstream: the whole reply, whatever max_tokens says
        self.mode = mode
        self.status = status
        self.error_message = error_message
        self.chunk_size = chunk_size
        self.chunk_delay = chunk_delay
        self.fail_times = fail_times
        self.fail_status = fail_status
        self.retry_after_ms = retry_after_ms
        self.delay = delay
        self.drop_after = drop_after
        self.send_finish = send_finish
        self.embedding_dim = embedding_dim
        self.model = model
        self.requests: list[StubRequest] = []
        self._posts = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> StubOpenAIServer:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread."""
        handler = type("Handler", (_Handler,), {"stub": self})
        self._httpd = _QuietServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving; wakes any request sleeping in ``"slow"`` mode."""
        self._closing.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> StubOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        """The port the server listens on."""
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """The server root, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    @property
    def request_count(self) -> int:
        """How many requests arrived so far."""
        return len(self.requests)

    # -- behaviour ---------------------------------------------------------------------------
    def _record(self, request: StubRequest) -> int:
        with self._lock:
            self.requests.append(request)
            if request.method == "POST":
                self._posts += 1
            return self._posts

    def reply_for(self, body: dict) -> tuple[str, str]:
        """The reply text for a chat request and its finish reason, after ``stop`` and ``max_tokens``."""
        text = self.reply(body) if callable(self.reply) else self.reply
        finish = "stop"
        stops = body.get("stop") or []
        for stop in [stops] if isinstance(stops, str) else stops:
            if stop and stop in text:
                text = text[: text.index(stop)]
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        if limit is not None and len(text) > limit and not self.ignore_max_tokens:
            text, finish = text[:limit], "length"
        return text, finish


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a request sleeping in "slow" mode must not hold up close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # clients that time out or drop are expected
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    stub: StubOpenAIServer
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streaming, like a real server

    def log_message(self, format: str, *args: Any) -> None:  # silence the per-request log
        pass

    # -- plumbing ------------------------------------------------------------------------------
    def _read_body(self) -> Any:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw.decode("utf-8", "replace")

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_error(self, status: int, message: str) -> None:
        kind = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                429: "rate_limit_error"}.get(status, "server_error")
        payload = {"error": {"message": message, "type": kind, "param": None, "code": str(status)}}
        headers = {"retry-after-ms": str(self.stub.retry_after_ms)} if self.stub.retry_after_ms is not None else {}
        self._send_json(status, payload, headers)

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode("ascii") + data + b"\r\n")
        self.wfile.flush()

    def _drop(self) -> None:
        """Close the socket abruptly, without the terminating chunk."""
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    # -- endpoints ------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self.stub._record(StubRequest("GET", self.path, {k.lower(): v for k, v in self.headers.items()}))
        if self.path.rstrip("/") == "/v1/models":
            model = {"id": self.stub.model, "object": "model", "created": int(time.time()), "owned_by": "stub"}
            self._send_json(200, {"object": "list", "data": [model]})
        else:
            self._send_error(404, f"Unknown path {self.path}")

    def do_POST(self) -> None:
        stub = self.stub
        body = self._read_body()
        n = stub._record(StubRequest("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if n <= stub.fail_times:
            return self._send_error(stub.fail_status, f"stub failure {n} of {stub.fail_times}")
        if stub.mode == "error":
            return self._send_error(stub.status, stub.error_message)
        if stub.mode == "slow" and stub._closing.wait(stub.delay):
            return self._drop()
        path = self.path.rstrip("/")
        if path == "/v1/chat/completions" and isinstance(body, dict):
            return self._chat(body)
        if path == "/v1/embeddings" and isinstance(body, dict):
            return self._embeddings(body)
        self._send_error(404, f"Unknown path {self.path}")

    def _chat(self, body: dict) -> None:
        stub = self.stub
        text, finish = stub.reply_for(body)
        model = body.get("model") or stub.model
        ident, created = f"chatcmpl-stub-{len(stub.requests)}", int(time.time())
        prompt = sum(len(str(m.get("content") or "")) for m in body.get("messages", []))  # characters, as tokens
        if not body.get("stream"):
            message = {"role": "assistant", "content": text, "refusal": None}
            return self._send_json(200, {
                "id": ident, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": len(text), "total_tokens": prompt + len(text)},
            })

        def event(delta: dict, finish_reason: str | None = None) -> bytes:
            chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                     "system_fingerprint": None,
                     "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
            return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()

        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self._write_chunk(event({"role": "assistant", "content": ""}))
        size = max(1, stub.chunk_size)
        for n, start in enumerate(range(0, len(text), size)):
            if stub.mode == "drop" and n >= stub.drop_after:
                return self._drop()
            self._write_chunk(event({"content": text[start : start + size]}))
            if stub.chunk_delay:
                time.sleep(stub.chunk_delay)
        if stub.mode == "drop":
            return self._drop()
        if stub.send_finish:
            self._write_chunk(event({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": prompt, "completion_tokens": len(text), "total_tokens": prompt + len(text)}
            chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [], "usage": usage}
            self._write_chunk(f"data: {json.dumps(chunk)}\n\n".encode())
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")  # the terminating zero-length chunk

    def _embeddings(self, body: dict) -> None:
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        dim = int(body.get("dimensions") or self.stub.embedding_dim)
        data = []
        for i, text in enumerate(texts):
            vector = embed_text(str(text), dim)
            if body.get("encoding_format") == "base64":  # little-endian float32, as OpenAI sends it
                vector = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode("ascii")
            data.append({"object": "embedding", "index": i, "embedding": vector})
        tokens = sum(len(str(t)) for t in texts)
        self._send_json(200, {"object": "list", "data": data, "model": body.get("model") or self.stub.model,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
