"""The web app's group chat and memory panels, their handlers called directly (no browser): start, stream a
round into avatar bubbles, let one speak, mute and the turn order, pin/change/unpin facts, resume, ownership."""

from __future__ import annotations

import pytest

pytest.importorskip("gradio", reason="the web demo needs the [web] extra: pip install 'chatharuhi[web]'")

from chatharuhi.backends.scripted import ScriptedBackend  # noqa: E402
from chatharuhi.errors import BudgetError, InputError  # noqa: E402
from chatharuhi.sessions import SessionStore  # noqa: E402
from chatharuhi.sessions.owners import NotYourChat, new_token, owner_key  # noqa: E402
from chatharuhi.web.app import Tab, WebDemo  # noqa: E402
from chatharuhi.web.demo import build_app  # noqa: E402
from chatharuhi.web.group import GroupTab  # noqa: E402


def in_character(messages):
    system = messages[0].content
    if system.startswith("你正在扮演凉宫春日"):
        return "春日:「出发！」"
    if system.startswith("你正在扮演孙悟空"):
        return "悟空:「俺老孙来也！」"
    return "嗯。"


@pytest.fixture
def store(tmp_path):
    with SessionStore(tmp_path / "s.sqlite3") as s:
        yield s


@pytest.fixture
def demo(store):
    return WebDemo(backend=ScriptedBackend([in_character], chunk_size=2), sessions=store, embedder="hash")


@pytest.fixture
def panel(demo):
    return demo.group


def last(views):
    out = {}
    for view in views:
        out.update(view)
    return out


def test_a_group_round_streams_into_one_bubble_per_speaker_with_its_avatar(panel, store):
    token = new_token()
    view = panel.start(["haruhi", "wukong"], "", "natural", 3, None, token)
    gtab = view["g_tab"]
    assert gtab.characters == ("haruhi", "wukong") and gtab.user_role == "阿虚"
    assert [v for _, v in view["g_speak"]["choices"]] == ["haruhi", "wukong"]
    frames = list(panel.send("春日，悟空，出发吧", gtab, token))
    assert any("is replying" in (f.get("g_status") or "") for f in frames)
    partial = [f["g_chat"] for f in frames if "g_chat" in f]
    assert len(partial) > 4  # streamed chunk by chunk
    done = last(frames)
    chat = done["g_chat"]
    assert [m["role"] for m in chat] == ["user", "assistant", "assistant"]
    assert "**凉宫春日**" in chat[1]["content"] and "出发！" in chat[1]["content"]
    assert chat[1]["content"].startswith('<img src="/gradio_api/file=') and "**孙悟空**" in chat[2]["content"]
    gtab = done["g_tab"]
    (session,) = store.list()
    assert gtab.session_id == session.id and session.character == "haruhi+wukong"
    assert session.title == "春日，悟空，出发吧"
    assert done["g_chats"]["choices"] == [("haruhi+wukong · 春日，悟空，出发吧", session.id)]


def test_let_one_speak_mute_and_the_turn_order(panel):
    token = new_token()
    gtab = panel.start(["haruhi", "wukong"], "", "natural", 3, None, token)["g_tab"]
    gtab = last(panel.send("大家好", gtab, token))["g_tab"]
    done = last(panel.speak("wukong", gtab, token))
    assert done["g_chat"][-1]["content"].count("俺老孙来也") == 1 and "**孙悟空**" in done["g_chat"][-1]["content"]
    gtab = panel.settings("list", 1, ["haruhi"], gtab)["g_tab"]
    for _ in range(3):
        chat = last(panel.send("春日，你好", gtab, token))["g_chat"]
        assert "**孙悟空**" in chat[-1]["content"]  # 春日 is muted, one reply a message
    with pytest.raises(InputError, match="unknown turn order"):
        panel.settings("random", 1, [], gtab)
    with pytest.raises(InputError, match="pick who speaks"):
        list(panel.speak(None, gtab, token))


def test_group_memory_pin_change_unpin_and_its_budget(panel):
    token = new_token()
    gtab = panel.start(["haruhi", "wukong"], "", "natural", 2, None, token)["g_tab"]
    view = panel.remember("我叫小林", "", gtab, token)
    assert "**1** · 我叫小林" in view["g_memory"]
    gtab = view["g_tab"]  # pinning started the stored chat
    view = panel.remember("俺是师弟", "wukong", gtab, token)
    assert "**2** · 俺是师弟 *(only wukong)*" in view["g_memory"]
    assert "**1** · 我叫小林，十六岁" in panel.change(1, "我叫小林，十六岁", gtab, token)["g_memory"]
    assert "我叫小林" not in panel.forget(1, gtab, token)["g_memory"]
    with pytest.raises(BudgetError, match="the fact is"):
        panel.remember("很长的故事" * 200, "", gtab, token)
    with pytest.raises(InputError, match="not a fact's number"):
        panel.forget("abc", gtab, token)


def test_a_group_chat_is_this_browsers_only_and_resumes(panel):
    mine, other = new_token(), new_token()
    gtab = panel.start(["haruhi", "wukong"], "", "natural", 3, None, mine)["g_tab"]
    gtab = last(panel.send("春日，悟空，出发吧", gtab, mine))["g_tab"]
    with pytest.raises(NotYourChat):
        panel.open(gtab.session_id, other)
    with pytest.raises(NotYourChat):
        list(panel.send("我也来", gtab, other))
    assert panel.chats(other) == []
    view = panel.open(gtab.session_id, mine)
    assert len(view["g_chat"]) == 3 and view["g_tab"].characters == ("haruhi", "wukong")


def test_bad_groups_are_refused(panel):
    token = new_token()
    with pytest.raises(InputError, match="pick the characters"):
        panel.start([], "", "natural", 3, None, token)
    with pytest.raises(InputError, match="in the group twice"):
        panel.start(["haruhi", "haruhi"], "", "natural", 3, None, token)
    with pytest.raises(InputError, match="start a group first"):
        list(panel.send("你好", GroupTab(), token))
    with pytest.raises(InputError, match="1 at least"):
        panel.start(["haruhi", "wukong"], "", "natural", 0, None, token)


def test_the_one_to_one_chat_has_a_memory_panel(demo, store):
    token, memory = new_token(), demo.memory
    tab = Tab(character="haruhi", user_role="阿虚", owner=owner_key(token))
    view = memory.chat_remember("我叫小林", tab, token)  # before any message: the chat starts now, as this browser's
    tab = view["tab"]
    assert tab.session_id is not None and "**1** · 我叫小林" in view["memory"]
    assert view["sessions"][1] == tab.session_id
    list(demo.send("你好", "阿虚", tab, token))
    prompt = demo.backend.calls[-1][0].content
    assert "阿虚请你记住：我叫小林" in prompt
    assert "我叫小林，今年十六" in memory.chat_change(1, "我叫小林，今年十六", tab, token)["memory"]
    assert "no pinned facts" in memory.chat_forget(1, tab, token)["memory"]
    with pytest.raises(NotYourChat):
        memory.chat_memory(tab, new_token())


def test_the_page_builds_with_both_panels(store):
    app = build_app(backend=ScriptedBackend([in_character]), sessions=store, embedder="hash")
    names = {d.get("api_name") for d in app.config["dependencies"]}
    assert {"group_start", "group_send", "group_speak", "group_settings", "group_pin", "pin_fact",
            "forget_fact"} <= names
