"""The server as real OpenAI clients use it: the openai SDK, langchain-openai and litellm, each against
``chatharuhi.server.app`` (uvicorn on a real socket) with ``StubOpenAIServer`` as the upstream."""

from __future__ import annotations

import openai
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx2")

from test_server import HARUHI_REPLY, error_of, make_app, running  # noqa: E402

from helpers.openai_stub import StubOpenAIServer  # noqa: E402

LONG_REPLY = "春日:「" + "外星人" * 30 + "」"
HASH_ID = "5f2d8c1b9e7a4f60a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0"  # a 64-character end-user hash


@pytest.fixture(scope="module")
def stub():
    with StubOpenAIServer(HARUHI_REPLY, chunk_size=3) as s:
        yield s


@pytest.fixture(scope="module", params=["async", "thread"])
def url(stub, request):
    """The server on each upstream path: chunks through the backend's async twin, or a worker thread."""
    with running(make_app(stub, upstream=request.param)) as u:
        yield u


@pytest.fixture(autouse=True)
def default_reply(stub):
    stub.reply = HARUHI_REPLY
    yield


def sdk(url, **kw):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="anything", max_retries=0, **kw)


def ask(**kw):
    kw.setdefault("model", "haruhi")
    kw.setdefault("messages", [{"role": "user", "content": "我们去找外星人吧"}])
    return kw


# -- finish_reason, n, usage ----------------------------------------------------------------------------
def test_length_cut_is_reported_streaming_and_not(url, stub):
    stub.reply = LONG_REPLY
    out = sdk(url).chat.completions.create(**ask(max_tokens=12))
    assert out.choices[0].finish_reason == "length"
    chunks = list(sdk(url).chat.completions.create(**ask(max_tokens=12, stream=True)))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert sdk(url).chat.completions.create(**ask()).choices[0].finish_reason == "stop"


def test_n_choices_each_post_processed(url, stub):
    out = sdk(url).chat.completions.create(**ask(n=3))
    assert [c.index for c in out.choices] == [0, 1, 2]
    assert all(c.message.content == "外星人？今天就去找！" for c in out.choices)  # each filtered
    chunks = list(sdk(url).chat.completions.create(**ask(n=2, stream=True)))
    by_index = {}
    for c in chunks:
        for ch in c.choices:
            by_index.setdefault(ch.index, []).append(ch.delta.content or "")
    assert {i: "".join(p) for i, p in by_index.items()} == {0: "外星人？今天就去找！", 1: "外星人？今天就去找！"}
    r = httpx.post(f"{url}/v1/chat/completions", json=ask(n=99))
    assert r.status_code == 400 and error_of(r)["param"] == "n"


def test_usage_is_the_upstreams_own_when_it_reports_one(url, stub):
    r = httpx.post(f"{url}/v1/chat/completions", json=ask(n=2))
    body, sent = r.json(), stub.requests[-1].body
    prompt = sum(len(m["content"]) for m in sent["messages"])  # the stub's usage counts characters
    assert r.headers["x-chatharuhi-usage"] == "upstream"
    assert body["usage"] == {"prompt_tokens": 2 * prompt, "completion_tokens": 2 * len(HARUHI_REPLY),
                             "total_tokens": 2 * (prompt + len(HARUHI_REPLY))}


def test_usage_falls_back_to_our_exact_count(tmp_path):
    from chatharuhi.backends.scripted import ScriptedBackend
    from chatharuhi.server.app import create_app

    with running(create_app(ScriptedBackend([HARUHI_REPLY]), embedder="hash")) as u:
        r = httpx.post(f"{u}/v1/chat/completions", json=ask())
    usage = r.json()["usage"]
    assert r.headers["x-chatharuhi-usage"] == "estimate" and usage["prompt_tokens"] > 100
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_include_usage_puts_null_on_every_chunk_and_totals_on_the_last(url):
    with httpx.stream("POST", f"{url}/v1/chat/completions",
                      json=ask(stream=True, stream_options={"include_usage": True})) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    import json

    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all("usage" in c and c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == len(HARUHI_REPLY)
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=ask(stream=True)) as r:
        plain = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert all("usage" not in c for c in plain)  # without include_usage: no usage key at all, as OpenAI


# -- accepted versus refused parameters -------------------------------------------------------------------
@pytest.mark.parametrize("extra", [
    {"prompt_cache_key": "k1"}, {"safety_identifier": HASH_ID}, {"verbosity": "low"}, {"modalities": ["text"]},
    {"prediction": {"type": "content", "content": "外星人"}}, {"seed": 7, "presence_penalty": 0.5},
    {"logprobs": False}, {"tools": [], "tool_choice": "none"}, {"response_format": {"type": "text"}},
    {"metadata": {"a": "b"}, "store": False, "service_tier": "auto", "reasoning_effort": "low"},
    {"parallel_tool_calls": False, "frequency_penalty": 0.1, "logit_bias": {"1": 2}},
])
def test_harmless_openai_parameters_are_accepted(url, extra):
    out = sdk(url).chat.completions.create(**ask(**extra))
    assert out.choices[0].message.content == "外星人？今天就去找！"


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


@pytest.mark.parametrize("extra, param", [
    ({"tools": [TOOL]}, "tools"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"functions": [TOOL["function"]]}, "functions"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}},
     "response_format"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"audio": {"voice": "alloy", "format": "wav"}, "modalities": ["text", "audio"]}, "audio"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"web_search_options": {}}, "web_search_options"),
    ({"logprobs": True, "top_logprobs": 2}, "logprobs"),
])
def test_parameters_a_character_cannot_honour_are_a_clear_400(url, stub, extra, param):
    before = stub.request_count
    with pytest.raises(openai.BadRequestError) as info:
        sdk(url).chat.completions.create(**ask(**extra))
    err = info.value.body
    assert err["param"] == param and "not supported by a character model" in err["message"]
    assert err["code"] == "unsupported_parameter" and stub.request_count == before  # never sent upstream


# -- user, in-story name, models, request ids, stop -------------------------------------------------------
@pytest.mark.parametrize("user", [HASH_ID, "org:42", "user-123@example.com"])
def test_user_is_the_end_user_id_not_a_story_name(url, stub, user):
    sdk(url).chat.completions.create(**ask(user=user))
    assert stub.requests[-1].body["messages"][-1]["content"] == "阿虚:「我们去找外星人吧」"


def test_story_name_from_message_name_header_and_extra_body(url, stub):
    c = sdk(url)
    c.chat.completions.create(**ask(messages=[{"role": "user", "content": "你好", "name": "古泉"}]))
    assert stub.requests[-1].body["messages"][-1]["content"] == "古泉:「你好」"
    c.chat.completions.create(**ask(extra_body={"user_role": "长门"}))
    assert stub.requests[-1].body["messages"][-1]["content"] == "长门:「我们去找外星人吧」"
    both = ask(messages=[{"role": "user", "content": "你好", "name": "古泉"}], extra_body={"user_role": "长门"})
    sdk(url, default_headers={"X-Chatharuhi-User-Role": "%E6%9C%9D%E6%AF%94%E5%A5%88"}).chat.completions.create(
        **both)
    assert stub.requests[-1].body["messages"][-1]["content"] == "朝比奈:「你好」"  # header > extra_body > name
    r = httpx.post(f"{url}/v1/chat/completions", json=ask(messages=[{"role": "user", "content": "x", "name": "a:b"}]))
    assert r.status_code == 400 and error_of(r)["param"] == "messages.0.name"


def test_models_have_real_created_and_responses_echo_the_canonical_id(url):
    from chatharuhi.character.discovery import find_character

    models = sdk(url).models.list().data
    haruhi = next(m for m in models if m.id == "haruhi")
    folder = find_character("haruhi").path
    assert haruhi.created == int((folder / "character.toml").stat().st_mtime) > 1_500_000_000
    assert all(m.created > 0 for m in models)
    assert sdk(url).chat.completions.create(**ask(model="春日")).model == "haruhi"
    chunks = list(sdk(url).chat.completions.create(**ask(model="HARUHI", stream=True)))
    assert {c.model for c in chunks} == {"haruhi"}


def test_every_response_has_a_request_id(url):
    for r in (httpx.get(f"{url}/v1/models"), httpx.get(f"{url}/health"), httpx.get(f"{url}/nope"),
              httpx.post(f"{url}/v1/chat/completions", json={"model": "haruhi"}),
              httpx.post(f"{url}/v1/chat/completions", json=ask())):
        assert r.headers["x-request-id"].startswith("req_"), r.status_code
    mine = httpx.post(f"{url}/v1/chat/completions", json=ask(), headers={"X-Request-Id": "trace-42"})
    assert mine.headers["x-request-id"] == "trace-42"
    raw = sdk(url).chat.completions.with_raw_response.create(**ask())
    assert raw.request_id and raw.request_id.startswith("req_")


def test_client_stop_adds_to_the_characters_stops(url, stub):
    sdk(url).chat.completions.create(**ask(stop=["。", "END"]))
    stops = stub.requests[-1].body["stop"]
    assert stops[:2] == ["。", "END"] and "\n阿虚:" in stops  # the character's own are kept
    r = httpx.post(f"{url}/v1/chat/completions", json=ask(stop=["a", "b", "c", "d", "e"]))
    assert r.status_code == 400 and error_of(r)["param"] == "stop"


# -- other clients ----------------------------------------------------------------------------------------
def test_langchain_openai_client(url, stub):
    pytest.importorskip("langchain_openai")
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="春日", base_url=f"{url}/v1", api_key="anything", max_retries=0, stream_usage=True)
    msg = llm.invoke([AIMessage("欢迎来到SOS团！"), HumanMessage("我们去找外星人吧", name="古泉")])
    assert msg.content == "外星人？今天就去找！"
    assert msg.response_metadata["finish_reason"] == "stop" and msg.response_metadata["model_name"] == "haruhi"
    assert msg.usage_metadata["output_tokens"] == len(HARUHI_REPLY)
    sent = stub.requests[-1].body["messages"]
    assert [m["content"] for m in sent[1:]] == ["阿虚:「」", "春日:「欢迎来到SOS团！」", "古泉:「我们去找外星人吧」"]
    stub.reply = LONG_REPLY
    chunks = list(llm.stream("你好", max_tokens=10))
    full = chunks[0]
    for c in chunks[1:]:
        full += c
    assert full.response_metadata["finish_reason"] == "length" and full.usage_metadata["output_tokens"] == 10


def test_litellm_client(url, stub, monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of the price list
    litellm = pytest.importorskip("litellm")

    kw = {"model": "openai/haruhi", "api_base": f"{url}/v1", "api_key": "anything", "num_retries": 0}
    out = litellm.completion(messages=[{"role": "user", "content": "我们去找外星人吧"}], user=HASH_ID, **kw)
    assert out.choices[0].message.content == "外星人？今天就去找！" and out.choices[0].finish_reason == "stop"
    assert out.usage.completion_tokens == len(HARUHI_REPLY)
    stub.reply = LONG_REPLY
    parts = list(litellm.completion(messages=[{"role": "user", "content": "你好"}], stream=True, max_tokens=10,
                                    stream_options={"include_usage": True}, **kw))
    assert [p.choices[0].finish_reason for p in parts if p.choices and p.choices[0].finish_reason] == ["length"]
    with pytest.raises(litellm.BadRequestError, match="not supported by a character model"):
        litellm.completion(messages=[{"role": "user", "content": "x"}], tools=[TOOL], **kw)
