"""A group as a model over real HTTP: the ``openai`` SDK asks ``haruhi+wukong``; each choice is one speaker, its
message carrying the speaker's ``name``; the conversation comes back as rounds; bad group requests are 4xx. And a
stored session brings its memory (pinned facts, vectors)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from server.test_server import client, error_of, make_app, running  # noqa: E402

from helpers.openai_stub import StubOpenAIServer  # noqa: E402


def in_character(body) -> str:
    system = body["messages"][0]["content"]
    return "春日:「好啊，出发！」" if system.startswith("你正在扮演凉宫春日") else "悟空:「俺老孙来也！」"


@pytest.fixture(scope="module")
def group_server():
    with StubOpenAIServer(in_character, chunk_size=3) as stub, running(make_app(stub)) as url:
        yield url, stub


def test_each_choice_is_one_speaker_with_its_name(group_server):
    url, stub = group_server
    out = client(url).chat.completions.create(model="haruhi+悟空", messages=[
        {"role": "user", "content": "春日，悟空，我们出发吧"}])
    assert out.model == "haruhi+wukong"
    names = [c.message.model_extra["name"] for c in out.choices]
    assert names == ["haruhi", "wukong"] and [c.index for c in out.choices] == [0, 1]
    assert [c.message.content for c in out.choices] == ["好啊，出发！", "俺老孙来也！"]
    assert out.usage.prompt_tokens > 0
    wukong = stub.requests[-1].body["messages"]  # the second speaker saw the first one's line
    assert wukong[0]["content"].startswith("你正在扮演孙悟空") and "在场的还有：凉宫春日" in wukong[0]["content"]
    assert wukong[-1]["content"] == "阿虚:「春日，悟空，我们出发吧」\n春日:「好啊，出发！」"


def test_a_group_streams_its_speakers_one_after_another(group_server):
    url, _ = group_server
    chunks = list(client(url).chat.completions.create(
        model="haruhi+wukong", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "悟空、春日，你们好"}]))
    firsts = [ch.choices[0].delta for ch in chunks if ch.choices and ch.choices[0].delta.role]
    assert [d.model_extra["name"] for d in firsts] == ["wukong", "haruhi"]  # in the order they were addressed
    by_index: dict[int, str] = {}
    for ch in chunks:
        if ch.choices:
            by_index[ch.choices[0].index] = by_index.get(ch.choices[0].index, "") + (ch.choices[0].delta.content or "")
    assert by_index == {0: "俺老孙来也！", 1: "好啊，出发！"}
    assert chunks[-1].usage.completion_tokens > 0


def test_the_conversation_sent_is_read_as_rounds(group_server):
    url, stub = group_server
    client(url).chat.completions.create(model="haruhi+wukong", extra_body={"user_role": "唐僧"}, messages=[
        {"role": "user", "content": "大家好"},
        {"role": "assistant", "name": "haruhi", "content": "你好！"},
        {"role": "assistant", "content": "悟空:「师父好」"},
        {"role": "user", "content": "春日，悟空，走吧"}])
    sent = [json.dumps(r.body["messages"], ensure_ascii=False) for r in stub.requests[-2:]]
    assert all("唐僧:「大家好」" in s and "春日:「你好！」" in s and "悟空:「师父好」" in s for s in sent)


@pytest.mark.parametrize("body, status, words", [
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                   {"role": "user", "content": "c"}]}, 400, "assistant message with no name"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "name": "sherlock", "content": "b"},
                   {"role": "user", "content": "c"}]}, 400, "'sherlock' is not in this group"),
    ({"n": 2}, 400, "each choice is one speaker"),
    ({"session_id": "x"}, 400, "session_id cannot be used with a group model"),
    ({"model": "haruhi+nobody"}, 404, "nobody"),
    ({"model": "+".join(["haruhi"] * 11)}, 400, "at most 10 characters"),
    ({"model": "haruhi+haruhi"}, 400, "in the group twice"),
])
def test_bad_group_requests_are_clear_4xx(group_server, body, status, words):
    import httpx2 as httpx

    url, _ = group_server
    payload = {"model": "haruhi+wukong", "messages": [{"role": "user", "content": "你好"}], **body}
    r = httpx.post(f"{url}/v1/chat/completions", json=payload, timeout=30)
    assert r.status_code == status, r.text
    assert words in error_of(r)["message"]


def test_a_server_session_brings_its_memory(tmp_path):
    """A stored session's pinned facts are in its prompts, and its messages' vectors are kept with it."""
    import httpx2 as httpx

    from chatharuhi.sessions import SessionStore

    store = SessionStore(tmp_path / "s.db")
    with StubOpenAIServer(in_character) as stub, running(make_app(stub, sessions=store)) as url:
        http = httpx.Client(base_url=url, timeout=30)
        created = http.post("/v1/sessions", json={"model": "haruhi", "user_role": "阿虚"}).json()
        sid, token = created["id"], created["owner_token"]
        store.add_fact(sid, "我叫小林")  # pinned with the Python API, the terminal or the web app
        for q in ("一", "二"):
            r = http.post("/v1/chat/completions", json={"model": "haruhi", "session_id": sid, "session_token": token,
                                                        "messages": [{"role": "user", "content": q}]})
            assert r.status_code == 200, r.text
        assert "阿虚请你记住：我叫小林" in stub.requests[-1].body["messages"][0]["content"]
        assert len(store.memory_vectors(sid, "hash:64")) == 2  # the hash embedder's id
    store.close()
