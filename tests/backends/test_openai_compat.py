"""The ``openai`` backend against a real OpenAI-compatible HTTP server, through the real ``openai`` SDK.

conftest's autouse fixture clears OPENAI_* and CHATHARUHI_* and points the home folder at a temporary one.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time

import openai
import pytest

from chatharuhi.backends.openai_compat import OpenAIBackend, known_context_window
from chatharuhi.backends.registry import get_backend
from chatharuhi.config import DEFAULT_CONTEXT_WINDOW, DEFAULT_OPENAI_MODEL
from chatharuhi.errors import (
    BackendConnectionError,
    BackendError,
    BackendResponseError,
    BackendTimeout,
    MissingAPIKey,
    UnknownOption,
)
from chatharuhi.types import Message
from helpers.openai_stub import StubOpenAIServer, embed_text

REPLY = "你好，我是凉宫春日。Nice to meet you!"
MESSAGES = [Message("system", "你是凉宫春日。"), Message("user", "你好")]


@pytest.fixture
def stub():
    with StubOpenAIServer(reply=REPLY) as server:
        yield server


@pytest.fixture
def make(stub):
    """Build backends pointed at the stub (no retries unless asked); closed after the test."""
    built: list[OpenAIBackend] = []

    def factory(**options) -> OpenAIBackend:
        options.setdefault("max_retries", 0)
        options.setdefault("timeout", 5.0)
        built.append(OpenAIBackend(base_url=stub.base_url, **options))
        return built[-1]

    yield factory
    for backend in built:
        backend.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the happy paths ------------------------------------------------------------------------------


def test_stream_yields_the_reply_in_several_chunks(stub, make):
    chunks = list(make().stream(MESSAGES))
    assert "".join(chunks) == REPLY
    assert len(chunks) > 1 and all(chunks)
    body = stub.requests[-1].body
    assert body["stream"] is True
    assert body["messages"] == [m.as_dict() for m in MESSAGES]


def test_complete_uses_one_non_streaming_request(stub, make):
    assert make().complete(MESSAGES) == REPLY
    assert stub.request_count == 1
    assert stub.requests[0].body["stream"] is False


def test_options_reach_the_server(stub, make):
    backend = make(model="qwen2.5-7b", temperature=0.3, top_p=0.9, max_tokens=100, extra_body={"top_k": 20})
    reply = "".join(backend.stream(MESSAGES, temperature=0.1, stop=["。"]))
    body = stub.requests[-1].body
    assert body["model"] == "qwen2.5-7b"
    assert body["temperature"] == 0.1  # the call's option beats the constructor's
    assert body["top_p"] == 0.9 and body["max_tokens"] == 100 and body["top_k"] == 20
    assert body["stop"] == ["。"]
    assert reply == "你好，我是凉宫春日"  # the server honoured the stop string

    assert backend.complete(MESSAGES, max_tokens=5) == REPLY[:5]
    assert stub.requests[-1].body["max_tokens"] == 5 and stub.requests[-1].body["temperature"] == 0.3


def test_unset_options_are_not_sent(stub, make):
    make().complete(MESSAGES)
    body = stub.requests[-1].body
    assert not {"temperature", "top_p", "max_tokens", "stop"} & set(body)
    assert body["model"] == DEFAULT_OPENAI_MODEL


def test_chinese_text_round_trips(stub, make):
    stub.reply = lambda body: "【回声】" + body["messages"][-1]["content"]
    text = "阿虚，你给我听好了！SOS团今天要去找外星人、未来人和超能力者。"
    backend = make()
    assert "".join(backend.stream([Message("user", text)])) == "【回声】" + text
    assert backend.complete([Message("user", text)]) == "【回声】" + text
    assert stub.requests[-1].body["messages"][0]["content"] == text


def test_injected_client_is_used(stub):
    with openai.OpenAI(base_url=stub.base_url, api_key="injected-key", max_retries=0) as client:
        backend = OpenAIBackend(client=client, model="m")
        assert backend.complete(MESSAGES) == REPLY
        assert stub.requests[-1].headers["authorization"] == "Bearer injected-key"
        backend.close()
        assert not client.is_closed()  # not ours to close


# -- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status, message", [(400, "max_tokens is too large"), (404, "The model `x` does not exist")])
def test_error_status_becomes_response_error_with_server_message(stub, status, message, make):
    stub.mode, stub.status, stub.error_message = "error", status, message
    backend = make()
    for call in (lambda: list(backend.stream(MESSAGES)), lambda: backend.complete(MESSAGES)):
        with pytest.raises(BackendResponseError) as info:
            call()
        assert info.value.status_code == status
        assert message in str(info.value) and str(status) in str(info.value)
    assert stub.request_count == 2  # 4xx other than 408/409/429 are not retried


def test_unauthorized_says_to_check_the_key(stub, make):
    stub.mode, stub.status, stub.error_message = "error", 401, "Incorrect API key provided"
    with pytest.raises(BackendResponseError) as info:
        make(api_key="sk-wrong").complete(MESSAGES)
    assert info.value.status_code == 401
    assert "OPENAI_API_KEY" in str(info.value) and "Incorrect API key provided" in str(info.value)
    assert stub.requests[-1].headers["authorization"] == "Bearer sk-wrong"


def test_server_errors_are_retried_with_the_sdk_backoff(stub, make):
    stub.fail_times, stub.fail_status = 2, 500  # no Retry-After: the SDK's own backoff (~0.4-0.5 s, then ~1 s)
    assert "".join(make(max_retries=2).stream(MESSAGES)) == REPLY
    assert stub.request_count == 3
    assert [r.headers["x-stainless-retry-count"] for r in stub.requests] == ["0", "1", "2"]


def test_rate_limit_beyond_the_retries_is_a_429(stub, make):
    stub.mode, stub.status, stub.error_message, stub.retry_after_ms = "error", 429, "Rate limit reached", 10
    started = time.monotonic()
    with pytest.raises(BackendResponseError) as info:
        make(max_retries=2).complete(MESSAGES)
    assert info.value.status_code == 429 and "Rate limit reached" in str(info.value)
    assert stub.request_count == 3
    assert time.monotonic() - started < 1.0  # the server's retry-after-ms was honoured


def test_stream_dropped_half_way_is_a_connection_error_after_the_first_chunks(stub, make):
    stub.mode, stub.drop_after, stub.chunk_size = "drop", 2, 4
    received = []
    with pytest.raises(BackendConnectionError, match="stream ended early"):
        for piece in make().stream(MESSAGES):
            received.append(piece)
    assert received == [REPLY[:4], REPLY[4:8]]


def test_stream_ending_without_a_finish_reason_is_a_connection_error(stub, make):
    stub.send_finish = False
    received = []
    with pytest.raises(BackendConnectionError, match="finish_reason"):
        for piece in make().stream(MESSAGES):
            received.append(piece)
    assert "".join(received) == REPLY


def test_slow_server_is_a_timeout(stub, make):
    stub.mode, stub.delay = "slow", 5.0
    started = time.monotonic()
    with pytest.raises(BackendTimeout, match="0.5"):
        list(make(timeout=0.5).stream(MESSAGES))
    assert time.monotonic() - started < 3.0
    assert isinstance(BackendTimeout("x"), BackendError)


def test_unreachable_server_is_a_connection_error():
    backend = OpenAIBackend(base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0, timeout=2.0)
    with pytest.raises(BackendConnectionError, match="127.0.0.1"):
        list(backend.stream(MESSAGES))
    with pytest.raises(BackendConnectionError):
        backend.complete(MESSAGES)
    backend.close()


# -- configuration -----------------------------------------------------------------------------------


def test_environment_is_read_at_construction(stub, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("CHATHARUHI_MODEL", "env-model")
    backend = OpenAIBackend(max_retries=0)
    monkeypatch.setenv("CHATHARUHI_MODEL", "changed-later")  # too late: already built
    assert backend.complete(MESSAGES) == REPLY
    request = stub.requests[-1]
    assert request.body["model"] == "env-model"
    assert request.headers["authorization"] == "Bearer sk-from-env"
    backend.close()


def test_arguments_beat_the_environment(stub, monkeypatch, make):
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("CHATHARUHI_MODEL", "env-model")
    make(api_key="sk-arg", model="arg-model").complete(MESSAGES)
    assert stub.requests[-1].body["model"] == "arg-model"
    assert stub.requests[-1].headers["authorization"] == "Bearer sk-arg"


def test_no_key_for_openai_itself_is_missing_api_key():
    with pytest.raises(MissingAPIKey, match="OPENAI_API_KEY"):
        OpenAIBackend()
    with pytest.raises(MissingAPIKey):
        OpenAIBackend(base_url="https://api.openai.com/v1/")


def test_local_server_needs_no_key(stub, make):
    make().complete(MESSAGES)
    assert stub.requests[-1].headers["authorization"] == "Bearer not-needed"


def test_registry_builds_the_backend(stub):
    with pytest.raises(UnknownOption, match="'max_retrys'; did you mean 'max_retries'"):
        get_backend("openai", base_url=stub.base_url, max_retrys=0)  # refused, never silently dropped
    backend = get_backend("openai", base_url=stub.base_url, max_retries=0)
    assert isinstance(backend, OpenAIBackend) and backend.name == "openai"
    assert backend.complete(MESSAGES) == REPLY
    backend.close()


def test_token_counter_counts_chinese_offline():
    counter = OpenAIBackend(api_key="sk-test", model="gpt-4o-mini").token_counter()
    assert counter.id == "tiktoken:o200k_base"
    assert 0 < counter.count("你好，我是凉宫春日。") <= len("你好，我是凉宫春日。")
    assert counter.count_messages(MESSAGES) > counter.count("你是凉宫春日。") + counter.count("你好")


def test_context_window_from_argument_table_or_default():
    assert OpenAIBackend(api_key="k", model="gpt-4o-mini").context_window == 128_000
    assert OpenAIBackend(api_key="k", model="gpt-4o", context_window=4096).context_window == 4096
    assert known_context_window("gpt-4.1-nano") == 128_000
    assert known_context_window("gpt-3.5-turbo-0125") == 16_385
    assert known_context_window("gpt-4") == 8_192
    assert known_context_window("gpt-4o-2024-08-06") == 128_000  # not mistaken for gpt-4
    assert known_context_window("qwen2.5:7b") == DEFAULT_CONTEXT_WINDOW


# -- async ------------------------------------------------------------------------------------------------


def test_astream_streams_natively_across_event_loops(stub, make):
    backend = make()

    async def collect() -> list[str]:
        return [piece async for piece in backend.astream(MESSAGES, temperature=0.2)]

    first = asyncio.run(collect())
    second = asyncio.run(collect())  # a fresh loop: the async client must not be reused across loops
    assert "".join(first) == "".join(second) == REPLY and len(first) > 1
    assert stub.requests[-1].headers["x-stainless-async"] != "false"  # AsyncOpenAI, not a worker thread
    assert stub.requests[-1].body["temperature"] == 0.2

    async def complete_and_close() -> str:
        try:
            return await backend.acomplete(MESSAGES)
        finally:
            await backend.aclose()

    assert asyncio.run(complete_and_close()) == REPLY


def test_finish_reason_and_usage_reported_sync_and_async(stub, make):
    """stream / astream with info=: the upstream's finish reason (length for a cut) and its usage."""
    from chatharuhi.backends.base import StreamInfo

    backend, info = make(), StreamInfo()
    assert "".join(backend.stream(MESSAGES, info=info, max_tokens=5)) == REPLY[:5]
    assert info.finish_reason == "length" and info.usage["completion_tokens"] == 5
    assert stub.requests[-1].body["stream_options"] == {"include_usage": True}

    async def collect(info):
        return "".join([p async for p in backend.astream(MESSAGES, info=info)])

    ainfo = StreamInfo()
    assert asyncio.run(collect(ainfo)) == REPLY
    assert ainfo.finish_reason == "stop" and ainfo.usage["total_tokens"] == ainfo.usage["prompt_tokens"] + len(REPLY)
    quiet = OpenAIBackend(base_url=stub.base_url, max_retries=0, stream_usage=False)
    "".join(quiet.stream(MESSAGES, info=StreamInfo()))
    assert "stream_options" not in stub.requests[-1].body  # for old servers that refuse the field


def test_astream_maps_errors(stub, make):
    backend = make()

    async def collect(received: list[str]) -> None:
        try:
            async for piece in backend.astream(MESSAGES):
                received.append(piece)
        finally:
            await backend.aclose()

    stub.mode, stub.status = "error", 404
    with pytest.raises(BackendResponseError) as info:
        asyncio.run(collect([]))
    assert info.value.status_code == 404

    stub.mode, stub.drop_after = "drop", 1
    received: list[str] = []
    with pytest.raises(BackendConnectionError, match="stream ended early"):
        asyncio.run(collect(received))
    assert received == [REPLY[:4]]


# -- the stub's other endpoints (used by the embedder and web tests) -------------------------------------


def test_stub_serves_models_and_deterministic_embeddings(stub):
    texts = ["凉宫春日", "阿虚", "凉宫春日"]
    with openai.OpenAI(base_url=stub.base_url, api_key="k", max_retries=0) as client:
        assert [m.id for m in client.models.list()] == ["stub-model"]
        # Left out, encoding_format is sent as "base64" and decoded by the SDK: both wire forms are served.
        for options, wire in (({"encoding_format": "float"}, "float"), ({}, "base64")):
            data = client.embeddings.create(model="e", input=texts, **options).data
            assert stub.requests[-1].body["encoding_format"] == wire
            vectors = [d.embedding for d in data]
            assert all(len(v) == 8 for v in vectors)
            assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-5) for v in vectors)
            assert vectors[0] == pytest.approx(vectors[2]) and vectors[0] != pytest.approx(vectors[1])
            assert vectors[1] == pytest.approx(embed_text("阿虚"), rel=1e-6)
        stub.embedding_dim = 16
        assert len(client.embeddings.create(model="e", input="x").data[0].embedding) == 16
