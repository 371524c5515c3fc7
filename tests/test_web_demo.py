"""The web demo's handlers, called directly (no browser): picking, streaming, regenerate, sessions, trace."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("gradio", reason="the web demo needs the [web] extra: pip install 'chatharuhi[web]'")

from chatharuhi.backends.scripted import ScriptedBackend  # noqa: E402
from chatharuhi.errors import BackendUnavailable, InputError  # noqa: E402
from chatharuhi.sessions import SessionStore  # noqa: E402
from chatharuhi.web import Tab, WebDemo, build_app  # noqa: E402
from conftest import ROOT  # noqa: E402


@pytest.fixture
def backend():
    # each reply says which call it is, so a regenerated reply differs from the first
    b = ScriptedBackend([lambda m: f"第{len(b.calls)}次回答：外星人今天放假了。"], chunk_size=2)
    return b


@pytest.fixture
def store(tmp_path):
    with SessionStore(tmp_path / "s.sqlite3") as s:
        yield s


@pytest.fixture
def demo(backend, store):
    return WebDemo(backend=backend, sessions=store, embedder="hash")


def send(demo, text, tab, owned=(), role="阿虚"):
    views = list(demo.send(text, role, tab, list(owned)))
    return views, views[-1]


def test_start_shows_the_default_character_with_its_greeting(demo):
    view = demo.start([])
    assert view["character"] == "haruhi" and view["tab"] == Tab("haruhi", None, "阿虚")
    assert view["chat"][0]["role"] == "assistant" and "SOS团" in view["chat"][0]["content"]
    assert view["card"].startswith("### 凉宫春日") and "SOS团团长" in view["card"]
    assert view["user_role"] == "阿虚" and view["sessions"] == ([], None)
    assert view["trace"] is None and view["avatar"] is None
    labels = dict((v, k) for k, v in demo.choices())
    assert labels["haruhi"] == "凉宫春日 (haruhi)" and labels["wukong"] == "孙悟空 (wukong)"


def test_picking_a_character_opens_its_greeting_and_keeps_a_typed_name(demo):
    tab = demo.start([])["tab"]
    view = demo.pick("wukong", "阿虚", tab)  # the old character's default name gives way to the new one's
    assert view["tab"] == Tab("wukong", None, "唐僧") and view["user_role"] == "唐僧"
    assert "俺老孙" in view["chat"][0]["content"] and "孙悟空" in view["card"]
    view = demo.pick("haruhi", "小明", view["tab"])  # a name the user typed is kept
    assert view["user_role"] == "小明"
    with pytest.raises(InputError, match="unknown character 'nobody'.*haruhi"):
        demo.pick("nobody", "", tab)


def test_avatar_from_the_character_folder(tmp_path, backend, store):
    from PIL import Image

    folder = tmp_path / "chars" / "yuki"
    shutil.copytree(ROOT / "characters" / "haruhi", folder)
    (folder / "character.toml").write_text('name = "yuki"\ndisplay_name = "长门有希"\nspeaker = "春日"\n'
                                           'greeting = "……"\ndescription = "文艺部唯一的部员。"\n', encoding="utf-8")
    Image.new("RGB", (8, 8), (200, 30, 30)).save(folder / "avatar.png")
    demo = WebDemo(backend=backend, sessions=store, embedder="hash", characters_dir=tmp_path / "chars")
    view = demo.pick("yuki", "", Tab())
    assert view["avatar"].size == (8, 8) and view["avatar"].getpixel((0, 0)) == (200, 30, 30)
    assert view["chat"] == [{"role": "assistant", "content": "……"}] and "文艺部" in view["card"]


def test_send_streams_then_commits_the_turn_to_the_store(demo, store):
    tab = demo.start([])["tab"]
    views, last = send(demo, "  我们去找外星人吧  ", tab)
    partial = [v["chat"][-1]["content"] for v in views if "chat" in v]
    assert partial[0] == "" and len(set(partial)) > 3  # empty bubble, then growing text
    assert all(a in b or a == "" for a, b in zip(partial, partial[1:]) if b)  # each chunk extends the last
    final = "第1次回答：外星人今天放假了。"
    assert last["chat"][-2:] == [{"role": "user", "content": "我们去找外星人吧"},
                                 {"role": "assistant", "content": final}]
    assert views[0]["message"] == ""  # the box is cleared as soon as the message is sent
    sid = last["tab"].session_id
    assert sid is not None and last["owned"] == [sid]
    session = store.get(sid)
    assert (session.character, session.user_role, session.title) == ("haruhi", "阿虚", "我们去找外星人吧")
    assert [(t.user_role, t.text, t.reply) for t in store.turns(sid)] == [("阿虚", "我们去找外星人吧", final)]
    assert last["sessions"][1] == sid and last["sessions"][0][0][1] == sid
    # the second message continues the same session
    _, last2 = send(demo, "那明天呢？", last["tab"], last["owned"], role="小明")
    assert last2["tab"].session_id == sid and len(store.turns(sid)) == 2
    assert store.turns(sid)[1].user_role == "小明" and last2["owned"] == [sid]


def test_an_empty_message_is_refused_and_creates_nothing(demo, store):
    with pytest.raises(InputError, match="empty message"):
        list(demo.send("   ", "阿虚", Tab("haruhi", None, "阿虚"), []))
    assert store.list() == []


def test_a_failed_stream_keeps_nothing(demo, backend, store):
    tab = demo.start([])["tab"]
    _, last = send(demo, "第一句", tab)
    backend.fail_after = 2
    with pytest.raises(ConnectionError):
        list(demo.send("第二句", "阿虚", last["tab"], last["owned"]))
    assert [t.text for t in store.turns(last["tab"].session_id)] == ["第一句"]
    assert [m["content"] for m in demo._messages(last["tab"])][1:] == ["第一句", "第1次回答：外星人今天放假了。"]


def test_regenerate_streams_a_new_reply_and_keeps_the_old_one(demo, store):
    tab = demo.start([])["tab"]
    _, last = send(demo, "今天做什么？", tab)
    views = list(demo.regenerate(last["tab"]))
    assert views[0]["chat"][-1] == {"role": "assistant", "content": ""}  # the old reply is replaced while streaming
    assert views[0]["chat"][-2] == {"role": "user", "content": "今天做什么？"}
    assert views[-1]["chat"][-1]["content"] == "第2次回答：外星人今天放假了。"
    assert views[-1]["status"].startswith("reply 2 of 2")
    sid = last["tab"].session_id
    assert store.alternatives(sid, 0) == ["第1次回答：外星人今天放假了。", "第2次回答：外星人今天放假了。"]
    assert len(store.turns(sid)) == 1 and views[-1]["trace"]["included_scenes"]
    with pytest.raises(InputError, match="nothing to regenerate"):
        list(demo.regenerate(Tab("haruhi", None, "阿虚")))


def test_new_chat_starts_over_and_keeps_the_old_session(demo, store):
    tab = demo.start([])["tab"]
    _, last = send(demo, "你好", tab)
    view = demo.new_chat("阿虚", last["tab"])
    assert view["tab"] == Tab("haruhi", None, "阿虚") and len(view["chat"]) == 1 and view["trace"] is None
    _, again = send(demo, "又见面了", view["tab"], last["owned"])
    assert again["tab"].session_id != last["tab"].session_id
    assert again["owned"] == [again["tab"].session_id, last["tab"].session_id]
    assert [label.split(" · ")[1] for label, _ in again["sessions"][0]] == ["又见面了", "你好"]
    assert [t.text for t in store.turns(again["tab"].session_id)] == ["又见面了"]


def test_two_visitors_are_isolated(demo, store):
    a, b = demo.start([]), demo.start([])
    _, la = send(demo, "我是甲", a["tab"], [])
    _, lb = send(demo, "我是乙", b["tab"], [], role="乙")
    assert la["tab"].session_id != lb["tab"].session_id
    assert [m["content"] for m in la["chat"] if m["role"] == "user"] == ["我是甲"]
    assert [m["content"] for m in lb["chat"] if m["role"] == "user"] == ["我是乙"]
    assert demo.bot(la["tab"].session_id) is not demo.bot(lb["tab"].session_id)
    assert demo.bot(la["tab"].session_id).index is demo.bot(lb["tab"].session_id).index  # one index per character
    # each browser lists only its own chats, and cannot open the other's
    assert [sid for _, sid in demo.session_choices(la["owned"])] == [la["tab"].session_id]
    assert [sid for _, sid in demo.start(lb["owned"])["sessions"][0]] == [lb["tab"].session_id]
    with pytest.raises(InputError, match="not in this browser"):
        demo.resume(la["tab"].session_id, lb["owned"])


def test_resume_from_the_session_list_after_a_restart(backend, store):
    demo = WebDemo(backend=backend, sessions=store, embedder="hash")
    tab = demo.pick("wukong", "", Tab())["tab"]
    _, last = send(demo, "悟空，前面有妖怪吗？", tab, role="唐僧")
    owned = last["owned"]
    fresh = WebDemo(backend=backend, sessions=store, embedder="hash")  # a restarted server, same store
    start = fresh.start(owned)
    ((label, sid),) = start["sessions"][0]
    assert label.startswith("孙悟空 · 悟空，前面有妖怪吗？ · ")
    view = fresh.resume(sid, owned)
    assert view["tab"] == Tab("wukong", sid, "唐僧") and view["character"] == "wukong"
    assert [m["content"] for m in view["chat"]][1:] == ["悟空，前面有妖怪吗？", "第1次回答：外星人今天放假了。"]
    assert view["trace"]["included_scenes"] and "唐僧" in view["scene_texts"]  # the stored trace of the last turn
    _, cont = send(fresh, "那就走吧", view["tab"], owned, role="唐僧")
    assert [t.text for t in store.turns(sid)] == ["悟空，前面有妖怪吗？", "那就走吧"]
    assert "那就走吧" in backend.calls[-1][-1].content
    assert any("前面有妖怪吗" in m.content for m in backend.calls[-1])  # the resumed history reached the model
    assert fresh.resume("", owned) == {}
    store.delete(sid)
    assert fresh.session_choices(owned) == []  # a deleted session drops out of the list


def test_trace_panel_shows_scene_ids_scores_texts_and_tokens(demo):
    tab = demo.start([])["tab"]
    _, last = send(demo, "外星人和未来人你选哪个？", tab)
    trace = last["trace"]
    assert trace["total_tokens"] > 0 and trace["parts"]["story"] > 0 and trace["budget"] > trace["total_tokens"]
    included = [r for r in last["scenes"] if r[3] == "yes"]
    assert included and [r[0] for r in included] == trace["included_scenes"]
    assert all(isinstance(r[1], float) and r[2] > 0 for r in included)
    first = included[0][0]
    assert f"**{first}** — score {included[0][1]:.4f}" in last["scene_texts"]
    bot = demo.bot(last["tab"].session_id)
    assert bot.character.scene(first).text.splitlines()[0] in last["scene_texts"]
    assert f"Prompt: {trace['total_tokens']} of {trace['budget']} tokens" in last["summary"]


def test_build_app_wires_the_handlers_and_switches_analytics_off(backend, store, monkeypatch):
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "True")
    import gradio as gr

    app = build_app(backend=backend, sessions=store, embedder="hash")
    assert isinstance(app, gr.Blocks) and isinstance(app.demo, WebDemo)
    import os

    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    ids = {getattr(b, "elem_id", None) for b in app.blocks.values()}
    assert {"character", "chat", "message", "send", "regenerate", "new-chat", "sessions", "trace"} <= ids
    assert len(app.fns) >= 6


def test_no_backend_configured_fails_at_start_up_with_the_fix(store, monkeypatch):
    monkeypatch.setattr("chatharuhi.backends.embedded.embedded_available", lambda: False)
    with pytest.raises(BackendUnavailable, match="OPENAI_API_KEY"):
        WebDemo(sessions=store, embedder="hash")


def test_cli_demo_parses_and_binds_to_loopback(monkeypatch, store):
    from chatharuhi import cli

    seen = {}

    def fake_launch(app, host, port, block=True):
        seen.update(host=host, port=port, demo=app.demo)

    monkeypatch.setattr("chatharuhi.web.launch", fake_launch)
    assert cli.main(["demo", "--backend", "scripted", "--embedder", "hash", "--port", "7999"]) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 7999
    assert seen["demo"].backend.name == "scripted"
    assert cli.build_parser().parse_args(["demo", "--host", "0.0.0.0"]).host == "0.0.0.0"


def test_warm_builds_every_index_before_the_first_visitor(demo):
    from chatharuhi.index import index_for

    demo.warm()
    tab = demo.start([])["tab"]
    views = demo.send("你好", "阿虚", tab, [])
    first = next(views)  # the user's message shows before the chatbot is even built
    assert first["chat"][-2:] == [{"role": "user", "content": "你好"}, {"role": "assistant", "content": ""}]
    assert first["status"] == "凉宫春日 is replying…"
    last = list(views)[-1]
    assert demo.bot(last["tab"].session_id).index is index_for(demo.character("haruhi"), demo.embedder)
