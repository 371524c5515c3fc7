"""The OpenAI-compatible server, end to end over real HTTP twice: the official ``openai`` SDK talks to
``chatharuhi.server.app`` (uvicorn on a real socket), which talks to ``StubOpenAIServer`` as its upstream."""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager
from urllib.parse import quote

import openai
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx2")

from chatharuhi.backends.openai_compat import OpenAIBackend  # noqa: E402
from chatharuhi.chat.conversation import Incoming, read_conversation, unwrap  # noqa: E402
from chatharuhi.errors import InputError  # noqa: E402
from chatharuhi.server.api import MAX_BODY_BYTES, MAX_MESSAGES  # noqa: E402
from chatharuhi.server.app import create_app  # noqa: E402
from chatharuhi.server.guard import owner_token  # noqa: E402
from chatharuhi.server.run import is_loopback, serve  # noqa: E402
from chatharuhi.sessions import SessionStore  # noqa: E402
from chatharuhi.types import Turn  # noqa: E402
from helpers.openai_stub import StubOpenAIServer  # noqa: E402

HARUHI_REPLY = "春日:「外星人？今天就去找！」"


@contextmanager
def running(app):
    """Serve ``app`` with uvicorn on a free port of 127.0.0.1 in a thread; yields the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def stub():
    with StubOpenAIServer(HARUHI_REPLY, chunk_size=3) as s:
        yield s


def make_app(stub, **kw):
    backend = OpenAIBackend(base_url=stub.base_url, api_key="upstream-key", max_retries=0, timeout=10)
    kw.setdefault("embedder", "hash")
    return create_app(backend, **kw)


@pytest.fixture(params=["async", "thread"])
def server(stub, request):
    """The server on both upstream paths: async (the default) and the older worker-thread one."""
    with running(make_app(stub, upstream=request.param)) as url:
        yield url


@pytest.fixture(scope="module")
def shared_server():
    """One server for the many bad-input cases (they never reach the upstream)."""
    with StubOpenAIServer(HARUHI_REPLY) as s, running(make_app(s)) as url:
        yield url


def client(url, key="anything", **kw):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, **kw)


def error_of(response) -> dict:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


# -- pure helpers ----------------------------------------------------------------------------------------
def test_unwrap_and_read_conversation():
    assert unwrap("阿虚:「你好」") == ("阿虚", "你好")
    assert unwrap("阿虚：「多行\n文本」") == ("阿虚", "多行\n文本")
    assert unwrap("just text: with a colon") == (None, "just text: with a colon")
    msgs = [("system", "ignored"), ("assistant", "欢迎！"), ("user", "古泉:「一」"), ("assistant", "春日:「好」"),
            ("user", "二"), ("user", "三"), ("assistant", "嗯"), ("user", "阿虚:「四」")]
    turns, text, name = read_conversation([Incoming(r, t) for r, t in msgs], "阿虚")
    assert turns == [Turn("阿虚", "", "欢迎！"), Turn("古泉", "一", "好"), Turn("阿虚", "二\n三", "嗯")]
    assert (text, name) == ("四", "阿虚")
    named = [Incoming("user", "你好", "长门"), Incoming("assistant", "嗯"), Incoming("user", "古泉:「再见」", "朝比奈")]
    assert read_conversation(named, "阿虚") == ([Turn("长门", "你好", "嗯")], "再见", "朝比奈")  # name beats wrapper
    with pytest.raises(InputError, match="last message must be the user's"):
        read_conversation([Incoming("user", "a"), Incoming("assistant", "b")], "阿虚")


def test_loopback_detection():
    assert all(map(is_loopback, ["127.0.0.1", "localhost", "::1", "127.0.0.2"]))
    assert not any(map(is_loopback, ["0.0.0.0", "192.168.1.2", "example.com", "::"]))


def test_non_loopback_without_key_refuses_to_start(monkeypatch):
    with pytest.raises(InputError, match="refusing to listen on 0.0.0.0 without an API key"):
        serve(host="0.0.0.0", llm="scripted")


# -- the SDK as the client ----------------------------------------------------------------------------------
def test_models_list_characters_with_aliases(server):
    models = client(server).models.list()
    ids = {m.id for m in models.data}
    assert {"haruhi", "sherlock", "wukong"} <= ids
    haruhi = next(m for m in models.data if m.id == "haruhi")
    assert "春日" in haruhi.aliases and haruhi.owned_by == "chatharuhi"
    assert client(server).models.retrieve("春日").id == "haruhi"


def test_non_streaming_completion_runs_the_pipeline(server, stub):
    c = client(server)
    out = c.chat.completions.create(model="凉宫春日", messages=[
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "我们去找外星人吧"}])
    assert out.object == "chat.completion" and out.model == "haruhi"  # the canonical id, not the alias
    assert out.choices[0].message.content == "外星人？今天就去找！"  # the speaker prefix is post-processed away
    assert out.choices[0].finish_reason == "stop" and out.usage.prompt_tokens > 0
    sent = stub.requests[-1].body["messages"]
    assert sent[0]["role"] == "system" and "凉宫春日" in sent[0]["content"]  # the character's prompt ...
    assert "helpful assistant" not in json.dumps(sent, ensure_ascii=False)  # ... not the client's
    assert sent[-1] == {"role": "user", "content": "阿虚:「我们去找外星人吧」"}


def test_streaming_completion_history_and_user_role(server, stub):
    c = client(server)
    stream = c.chat.completions.create(model="haruhi", stream=True, extra_body={"user_role": "古泉"},
                                       stream_options={"include_usage": True}, messages=[
                                           {"role": "user", "content": "第一句"},
                                           {"role": "assistant", "content": "春日:「嗯」"},
                                           {"role": "user", "content": "第二句"}])
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "外星人？今天就去找！"
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens > 0 and chunks[-1].choices == []
    assert len({ch.id for ch in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"
    sent = [m["content"] for m in stub.requests[-1].body["messages"][1:]]
    assert sent == ["古泉:「第一句」", "春日:「嗯」", "古泉:「第二句」"]


def test_user_role_header_wins_and_accepts_utf8(server, stub):
    c = client(server, default_headers={"X-Chatharuhi-User-Role": quote("长门")})
    c.chat.completions.create(model="haruhi", user="古泉", messages=[{"role": "user", "content": "你好"}])
    assert stub.requests[-1].body["messages"][-1]["content"] == "长门:「你好」"


def test_sampling_options_are_forwarded(server, stub):
    client(server).chat.completions.create(model="haruhi", messages=[{"role": "user", "content": "你好"}],
                                           temperature=0.3, max_tokens=5, top_p=0.9, seed=1)
    body = stub.requests[-1].body
    assert (body["temperature"], body["max_tokens"], body["top_p"]) == (0.3, 5, 0.9)


def test_server_side_session(stub, tmp_path):
    store = SessionStore(tmp_path / "s.db")
    with running(make_app(stub, sessions=store)) as url:
        http = httpx.Client(base_url=url)
        created = http.post("/v1/sessions", json={"model": "春日", "user_role": "阿虚"}).json()
        sid, token = created["id"], created["owner_token"]
        http.headers["X-Chatharuhi-Session-Token"] = token
        c = client(url)
        for q in ["一", "二"]:
            c.chat.completions.create(model="haruhi", messages=[{"role": "user", "content": q}],
                                      extra_body={"session_id": sid, "session_token": token})
        list(c.chat.completions.create(model="haruhi", messages=[{"role": "user", "content": "三"}],
                                       extra_body={"session_id": sid}, stream=True,
                                       extra_headers={"X-Chatharuhi-Session-Token": token}))
        assert [t.text for t in store.turns(sid)] == ["一", "二", "三"]
        sent = [m["content"] for m in stub.requests[-1].body["messages"][1:]]
        assert sent[0] == "阿虚:「一」" and sent[-1] == "阿虚:「三」"  # the history came from the store
        exported = http.get(f"/v1/sessions/{sid}").json()
        assert exported["turns"][0]["reply"] == "外星人？今天就去找！"
        r = http.post("/v1/chat/completions", json={"model": "haruhi", "session_id": "nope",
                                                    "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 404 and error_of(r)["param"] == "session_id"
        r = http.post("/v1/chat/completions", json={"model": "sherlock", "session_id": sid,
                                                    "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 400 and "belongs to 'haruhi'" in error_of(r)["message"]
    store.close()


# -- errors -------------------------------------------------------------------------------------------------
def test_unknown_character_is_404_listing_names(server):
    with pytest.raises(openai.NotFoundError) as info:
        client(server).chat.completions.create(model="harhui", messages=[{"role": "user", "content": "hi"}])
    msg = info.value.body["message"]
    assert "Unknown character 'harhui'" in msg and "haruhi" in msg and "sherlock" in msg
    assert info.value.body["code"] == "model_not_found"


@pytest.mark.parametrize("model", ["../etc", "/etc/passwd", "characters/haruhi", "..\\x"])
def test_model_that_is_a_path_is_rejected(shared_server, model):
    r = httpx.post(f"{shared_server}/v1/chat/completions", json={"model": model, "messages": [
        {"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and error_of(r)["param"] == "model" and "not a path" in error_of(r)["message"]


@pytest.mark.parametrize("body, param, words", [
    ({"model": "haruhi", "messages": []}, "messages", "must not be empty"),
    ({"model": "haruhi"}, "messages", "Field required"),
    ({"model": 5, "messages": [{"role": "user", "content": "hi"}]}, "model", "valid string"),
    ({"model": "haruhi", "messages": "hi"}, "messages", "valid list"),
    ({"model": "haruhi", "messages": [{"role": "user", "content": 5}]}, "messages.0.content", ""),
    ({"model": "haruhi", "messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role", ""),
    ({"model": "haruhi", "stream": "yes", "messages": [{"role": "user", "content": "hi"}]}, "stream", "boolean"),
    ({"model": "haruhi", "temprature": 1, "messages": [{"role": "user", "content": "hi"}]}, "temprature",
     "Unrecognized request argument"),
    ({"model": "haruhi", "temperature": 9, "messages": [{"role": "user", "content": "hi"}]}, "temperature", ""),
    ({"model": "haruhi", "messages": [{"role": "user", "content": "hi"}] * (MAX_MESSAGES + 1)}, "messages", ""),
    ({"model": "haruhi", "messages": [{"role": "user", "content": "   "}]}, None, "empty message"),
    ({"model": "haruhi", "messages": [{"role": "assistant", "content": "hi"}]}, None, "last message"),
    ({"model": "haruhi", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages",
     "not supported"),
])
def test_bad_requests_get_openai_style_400s(shared_server, body, param, words):
    r = httpx.post(f"{shared_server}/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["type"] == "invalid_request_error" and err["param"] == param and words in err["message"]
    assert "Traceback" not in r.text


@pytest.mark.parametrize("raw, words", [
    (b'{"model": "haruhi", "messages": [', "not valid JSON at line 1"),
    (b'{"model": "haruhi", "messages": [{"role": "user", "content": "\xff\xfe"}]}', "not valid UTF-8"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"model": "haruhi", "messages": [{"role": "user", "content": "\\ud800"}]}', "not valid Unicode"),
    (b"", "not valid JSON"),
])
def test_malformed_bodies(shared_server, raw, words):
    r = httpx.post(f"{shared_server}/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400 and words in error_of(r)["message"]


def test_oversized_body_is_413_with_and_without_content_length(shared_server):
    big = b'{"model": "haruhi", "messages": [{"role": "user", "content": "' + b"x" * MAX_BODY_BYTES + b'"}]}'
    r = httpx.post(f"{shared_server}/v1/chat/completions", content=big)
    assert r.status_code == 413 and error_of(r)["code"] == "request_too_large"
    r = httpx.post(f"{shared_server}/v1/chat/completions", content=iter([big[:500_000], big[500_000:]]))  # chunked
    assert r.status_code == 413


def test_unknown_path_and_method_are_json(shared_server):
    r = httpx.get(f"{shared_server}/v1/nothing")
    assert r.status_code == 404 and "Unknown path" in error_of(r)["message"]
    r = httpx.get(f"{shared_server}/v1/chat/completions")
    assert r.status_code == 405 and error_of(r)


def test_upstream_errors_map_to_5xx_json(server, stub):
    stub.mode, stub.status = "error", 500
    with pytest.raises(openai.APIStatusError) as info:
        client(server).chat.completions.create(model="haruhi", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 502 and info.value.body["code"] == "upstream_error"
    stub.mode = "drop"  # the upstream drops the stream after 2 chunks: the client gets an error event
    with pytest.raises(openai.APIError, match="stream ended early|closed"):
        list(client(server).chat.completions.create(model="haruhi", stream=True,
                                                    messages=[{"role": "user", "content": "hi"}]))


def test_api_key_is_enforced_when_set(stub):
    with running(make_app(stub, api_key="s3cret")) as url:
        with pytest.raises(openai.AuthenticationError):
            client(url, key="wrong").models.list()
        r = httpx.get(f"{url}/v1/models")
        assert r.status_code == 401 and error_of(r)["code"] == "invalid_api_key"
        assert client(url, key="s3cret").models.list().data


@pytest.mark.parametrize("upstream", ["async", "thread"])
def test_client_disconnect_mid_stream_stops_upstream_and_records_nothing(tmp_path, upstream):
    store = SessionStore(tmp_path / "s.db")
    long_reply = "春日:「" + "啦" * 4000 + "」"
    with StubOpenAIServer(long_reply, chunk_size=1) as slow_stub:
        closed = threading.Event()
        backend = OpenAIBackend(base_url=slow_stub.base_url, max_retries=0, timeout=10)
        real_stream, real_astream = backend.stream, backend.astream

        # Both note when the server closes the upstream stream; 2 ms a chunk (8 s in all) keeps the reply from
        # finishing before the client's disconnect is seen on a loaded machine.
        def watched(messages, info=None, **options):
            try:
                for chunk in real_stream(messages, info=info, **options):
                    time.sleep(0.002)
                    yield chunk
            finally:
                closed.set()

        async def awatched(messages, info=None, **options):
            import asyncio

            try:
                async for chunk in real_astream(messages, info=info, **options):
                    await asyncio.sleep(0.002)
                    yield chunk
            finally:
                closed.set()

        backend.stream, backend.astream = watched, awatched
        slow_stub.reply = lambda body: (time.sleep(0.001), long_reply)[1]
        with running(create_app(backend, embedder="hash", sessions=store, upstream=upstream)) as url:
            created = httpx.post(f"{url}/v1/sessions", json={"model": "haruhi"}).json()
            sid = created["id"]
            body = {"model": "haruhi", "stream": True, "session_id": sid, "session_token": created["owner_token"],
                    "messages": [
                {"role": "user", "content": "数到四千"}]}
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
                lines = r.iter_lines()
                for _ in range(5):
                    next(lines)
            assert closed.wait(5), "the server kept reading the upstream after the client left"
            time.sleep(0.2)
            assert store.turns(sid) == []
    store.close()


def test_read_only_session_store_is_a_clear_503(stub, tmp_path):
    import sqlite3

    db = tmp_path / "s.db"
    store = SessionStore(db, timeout=0.1)
    sid = store.create("haruhi", "阿虚").id
    token = owner_token(b"secret", sid)
    locker = sqlite3.connect(db, isolation_level=None)
    with running(make_app(stub, sessions=store, session_secret="secret")) as url:
        locker.execute("BEGIN EXCLUSIVE")
        try:
            r = httpx.post(f"{url}/v1/chat/completions", json={"model": "haruhi", "session_id": sid, "messages": [
                {"role": "user", "content": "你好"}], "session_token": token})
            assert r.status_code == 503 and "another process is writing" in error_of(r)["message"]
        finally:
            locker.execute("ROLLBACK")
        r = httpx.post(f"{url}/v1/chat/completions", json={"model": "haruhi", "session_id": sid, "messages": [
            {"role": "user", "content": "你好"}], "session_token": token})
        assert r.status_code == 200
    assert len(store.turns(sid)) == 1
    store.close()


def test_served_local_backend_keeps_its_budgets_layout_and_prefill():
    """A small local model asks for a short prompt, the stable-prefix layout and a prefilled reply; the
    server's timing wrapper must not hide that (it did: served embedded models got full budgets, no prefill)."""
    from chatharuhi.backends.scripted import ScriptedBackend

    backend = ScriptedBackend(["我们去找外星人吧"])
    backend.budget_hint = {"story_tokens": 120, "history_tokens": 80, "reply_reserve": 60}
    backend.prompt_layout = "stable_prefix"
    backend.supports_prefill = True
    with running(create_app(backend, embedder="hash")) as url:
        reply = client(url).chat.completions.create(
            model="haruhi", messages=[{"role": "user", "content": "今天的活动是什么？"}])
    assert reply.choices[0].message.content
    messages, options = backend.calls[-1], backend.call_options_seen[-1]
    assert options.get("prefill"), options  # the reply is started as the character's own line
    assert options.get("max_tokens") == 60, options
    # stable prefix: the system message holds no scenes; they travel in the last user message
    assert messages[0].role == "system" and messages[-1].role == "user"
    assert "###" not in messages[0].content and "###" in messages[-1].content  # the story block after the prefix


def test_a_served_local_model_keeps_the_story_across_requests_of_one_conversation(monkeypatch):
    """The server gets the whole conversation on every request; story reuse is keyed by it, so the second
    request of a conversation finds the first's story (and keeps it for the model's KV cache)."""
    from chatharuhi.backends.scripted import ScriptedBackend
    from chatharuhi.prompting.reuse import StoryMemory

    recalled = []
    recall = StoryMemory.recall
    monkeypatch.setattr(StoryMemory, "recall", lambda self, turns: recalled.append(recall(self, turns)) or recalled[-1])
    backend = ScriptedBackend(["春日:「好啊！」"])
    backend.prompt_layout = "stable_story"
    question = "我们今天去找外星人吧，你觉得他们会在哪里？"
    with running(create_app(backend, embedder="hash")) as url:
        api = client(url)
        api.chat.completions.create(model="haruhi", messages=[{"role": "user", "content": question}])
        api.chat.completions.create(model="haruhi", messages=[
            {"role": "user", "content": question}, {"role": "assistant", "content": "好啊！"},
            {"role": "user", "content": question}])
        api.chat.completions.create(model="haruhi", messages=[
            {"role": "user", "content": "别的话题"}, {"role": "assistant", "content": "好啊！"},
            {"role": "user", "content": question}])
    assert recalled[0] is None and recalled[1] is not None and recalled[2] is None
    first, second, _ = backend.calls[-3:]
    assert second[0] == first[0] and first[0].content.count("###") >= 1  # the kept story, in the system message
