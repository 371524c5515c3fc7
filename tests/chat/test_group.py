"""Group chats: who speaks, each speaker's own prompt (nothing of another's, checked through a real HTTP
upstream), replies that do not speak for others, rounds kept in the store, memory per character, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatharuhi import Chatbot, GroupChat, Said
from chatharuhi.backends.scripted import ScriptedBackend
from chatharuhi.errors import BudgetError, CharacterNotFound, InputError, SessionError, UnknownOption
from chatharuhi.sessions import SessionStore


def in_character(messages):
    """Each member answers in its own voice (the scripted replies would otherwise cycle across speakers)."""
    system = messages[0].content
    if system.startswith("你正在扮演凉宫春日"):
        return "春日:「好啊！」"
    if system.startswith("你正在扮演孙悟空"):
        return "悟空:「俺老孙来也！」"
    return "嗯。"


def group(replies=(in_character,), names=("haruhi", "wukong"), **kw):
    kw.setdefault("embedder", "hash")
    kw.setdefault("seed", 1)
    backend = kw.pop("backend", None) or ScriptedBackend(list(replies))
    return GroupChat(list(names), llm=backend, **kw)


def test_a_round_says_who_spoke_and_what():
    g = group()
    said = g.chat("春日，悟空，大家好")
    assert said == [Said("haruhi", "好啊！"), Said("wukong", "俺老孙来也！")]
    (rnd,) = g.history
    assert (rnd.user_role, rnd.text, rnd.replies, rnd.present) == ("阿虚", "春日，悟空，大家好", tuple(said),
                                                                  ("haruhi", "wukong"))
    assert set(g.last_traces) == {"haruhi", "wukong"}
    assert all(t.included_scenes for t in g.last_traces.values())


def test_every_member_shares_one_backend_and_one_embedder():
    g = group()
    backends = {id(b.backend) for b in g.bots.values()}
    embedders = {id(b.embedder) for b in g.bots.values()}
    assert backends == {id(g.backend)} and embedders == {id(g.embedder)}


def test_stream_gives_each_speaker_in_turn_and_commits_the_round_at_the_end():
    g = group(backend=ScriptedBackend(["春日:「一二三四五六」", "悟空:「七八九十」"], chunk_size=2))
    seen = []
    for speaking in g.stream("春日，悟空，数数"):
        chunks = list(speaking)
        seen.append((speaking.speaker, "".join(chunks), len(chunks) > 1))
        assert g.history == []  # not yet committed
    assert seen == [("haruhi", "一二三四五六", True), ("wukong", "七八九十", True)]
    assert len(g.history) == 1


def test_a_speaker_that_fails_keeps_the_replies_that_finished():
    backend = ScriptedBackend(["春日:「好啊！」", "悟空:「俺老孙这就——」"], chunk_size=2)
    g = group(backend=backend)
    rounds = g.stream("春日，悟空，走吧")
    first = next(rounds)
    assert first.text() == "好啊！"
    backend.fail_after = 1
    second = next(rounds)
    with pytest.raises(ConnectionError):
        second.text()
    rounds.close()
    (rnd,) = g.history
    assert rnd.replies == (Said("haruhi", "好啊！"),)


def test_a_reply_that_speaks_for_another_member_is_cut():
    g = group(["春日:「走吧！」\n悟空:「俺也去」\n阿虚:「我不去」"], max_replies=1)
    assert g.chat("春日，去哪？") == [Said("haruhi", "走吧！")]
    stops = g.backend.call_options_seen[-1]["stop"]
    assert "\n悟空:" in stops and "\n阿虚:" in stops


def test_each_prompt_names_who_else_is_present_and_renders_every_speaker():
    g = group(talkativeness={"haruhi": 1.0})
    g.chat("春日，悟空，大家好")
    g.chat("悟空，你会七十二变吗")
    calls = g.backend.calls
    haruhi = [c for c in calls if c[0].content.startswith(g.bots["haruhi"].prompt.system_prompt[:30])]
    wukong = [c for c in calls if c[0].content.startswith(g.bots["wukong"].prompt.system_prompt[:30])]
    assert len(haruhi) == 2 and len(wukong) == 2
    assert all("在场的还有：孙悟空。" in c[0].content for c in haruhi)
    assert all("在场的还有：凉宫春日。" in c[0].content for c in wukong)
    last = wukong[-1]  # its own line is the assistant's; the others' are the user's, each with its name
    assert [m.role for m in last] == ["system", "user", "assistant", "user"]
    assert last[1].content == "阿虚:「春日，悟空，大家好」\n春日:「好啊！」"
    assert last[2].content == "悟空:「俺老孙来也！」"
    assert last[3].content.startswith("阿虚:「悟空，你会七十二变吗」")


# -- nothing of one character's prompt or scenes in another's, through the real HTTP stub ---------------------
def make_character(root: Path, name: str, speaker: str, secret: str) -> Path:
    folder = root / name
    (folder / "texts").mkdir(parents=True)
    (folder / "character.toml").write_text(f'name = "{name}"\ndisplay_name = "{speaker}"\nspeaker = "{speaker}"\n'
                                           f'aliases = []\nuser_role = "旅人"\nlanguage = "zh"\n', encoding="utf-8")
    (folder / "system_prompt.txt").write_text(f"你是{speaker}。秘密设定：{secret}-prompt。", encoding="utf-8")
    for i in range(3):
        (folder / "texts" / f"{i}.txt").write_text(f"旅人:「你好」\n{speaker}:「{secret}-scene-{i} 你好啊」",
                                                   encoding="utf-8")
    return folder


def test_no_member_sees_another_members_hidden_prompt_or_scenes(tmp_path):
    from chatharuhi.backends.openai_compat import OpenAIBackend
    from helpers.openai_stub import StubOpenAIServer

    make_character(tmp_path, "alpha", "阿尔法", "ALPHA-SECRET")
    make_character(tmp_path, "beta", "贝塔", "BETA-SECRET")
    with StubOpenAIServer(reply=lambda body: "嗯，我明白了。") as stub:
        backend = OpenAIBackend(base_url=stub.base_url, api_key="k", max_retries=0)
        g = GroupChat(["alpha", "beta"], llm=backend, embedder="hash", characters_dir=tmp_path, seed=2,
                      order="list", max_replies=2)
        for text in ("大家好", "阿尔法，你好啊", "贝塔，你呢", "你好"):
            g.chat(text)
        g.memory.pin("旅人叫小林")
        g.memory.pin("只有贝塔知道的事", character="beta")
        g.chat("还记得我吗")
        bodies = [r.body for r in stub.requests if r.path.endswith("/chat/completions")]
    assert len(bodies) == 10
    for body in bodies:
        text = json.dumps(body["messages"], ensure_ascii=False)
        mine = "ALPHA" if "ALPHA-SECRET-prompt" in text else "BETA"
        other = "BETA" if mine == "ALPHA" else "ALPHA"
        assert f"{mine}-SECRET-prompt" in body["messages"][0]["content"]
        assert f"{other}-SECRET" not in text, (mine, text)
        assert f"{mine}-SECRET-scene" in text  # its own scenes are there
        if "还记得我吗" in text:
            assert "旅人叫小林" in text
            assert ("只有贝塔知道的事" in text) == (mine == "BETA")


# -- a group of one is a one-to-one chat ------------------------------------------------------------------
def test_a_group_of_one_sends_what_a_one_to_one_chat_sends(tmp_path):
    texts = ["我的猫叫豆豆", "今天天气不错", "我们去活动室吧", "你在看什么书", "下午有体育课", "我的猫叫什么？"]
    solo_backend, group_backend = ScriptedBackend(["春日:「嗯。」"]), ScriptedBackend(["春日:「嗯。」"])
    store = SessionStore(tmp_path / "s.sqlite3")
    solo = Chatbot("haruhi", llm=solo_backend, embedder="hash", history_tokens=60)
    g = GroupChat(["haruhi"], llm=group_backend, embedder="hash", history_tokens=60, sessions=store)
    solo.memory.pin("我叫小林")
    g.memory.pin("我叫小林")
    for text in texts:
        assert solo.chat(text) == g.chat(text)[0].text
    assert solo_backend.calls == group_backend.calls
    assert "豆豆" in group_backend.calls[-1][0].content  # recalled from memory, in both
    resumed = Chatbot(session=g.session.id, sessions=store, llm=ScriptedBackend(), embedder="hash")
    assert [t.reply for t in resumed.history] == ["嗯。"] * len(texts)  # stored as a one-to-one chat is
    store.close()


# -- bad input ----------------------------------------------------------------------------------------------
def test_bad_groups_are_refused_clearly():
    with pytest.raises(CharacterNotFound, match="did you mean 'haruhi'"):
        group(names=("harhui", "wukong"))
    with pytest.raises(InputError, match="'haruhi' is in the group twice"):
        group(names=("haruhi", "春日"))
    with pytest.raises(InputError, match="a group holds at most 10 characters; 20 were given"):
        group(names=["haruhi"] * 20)
    with pytest.raises(InputError, match="no characters given"):
        group(names=())
    with pytest.raises(UnknownOption, match="did you mean 'max_replies'"):
        group(max_reply=2)
    with pytest.raises(InputError, match=r"talkativeness\['wukong'\]=2"):
        group(talkativeness={"wukong": 2})


def test_addressing_one_not_in_the_group_is_refused_and_changes_nothing():
    g = group()
    with pytest.raises(InputError, match=r"'sherlock' is not in this group \(haruhi, wukong\): add it first"):
        g.chat("你好", speakers=["sherlock"])
    with pytest.raises(InputError, match="not in this group"):
        g.mute("sherlock")
    with pytest.raises(InputError, match="empty message"):
        g.chat("   ")
    assert g.history == []
    assert len(g.chat("Sherlock 在吗？")) >= 1  # named in the text only: the members answer as usual


def test_muted_members_speak_only_when_asked():
    g = group(max_replies=2)
    g.mute("悟空")
    for _ in range(4):
        assert all(s.speaker == "haruhi" for s in g.chat("悟空，春日，你们好"))
    assert [s.speaker for s in g.chat(speakers=["wukong"])] == ["wukong"]  # "let X speak"
    g.unmute("wukong")
    assert g.muted == set()


def test_the_same_seed_and_messages_give_the_same_speakers():
    def speakers(seed):
        g = group(seed=seed, max_replies=2)
        return [[s.speaker for s in g.chat(t)] for t in ("嗨", "今天做什么", "好无聊", "去吃饭吧", "走吧")]

    assert speakers(11) == speakers(11)


# -- stored, resumed, exported; memory per character ----------------------------------------------------------
def test_a_group_is_a_session_like_any_other(tmp_path):
    store = SessionStore(tmp_path / "s.sqlite3")
    g = group(sessions=store)
    g.chat("春日，悟空，大家好")
    g.chat(speakers=["wukong"])
    session = g.session
    assert session.character == "haruhi+wukong" and [s.id for s in store.list()] == [session.id]
    exported = json.loads(store.export(session.id))
    assert exported["turns"][0]["reply"] == "春日:「好啊！」\n悟空:「俺老孙来也！」"
    assert exported["turns"][0]["trace"]["group"]["present"] == ["haruhi", "wukong"]
    again = GroupChat(session=session.id, sessions=store, llm=ScriptedBackend(["悟空:「嗯」"]), embedder="hash")
    assert again.characters == ["haruhi", "wukong"] and again.history == g.history
    with pytest.raises(SessionError, match="is a conversation with 'haruhi\\+wukong'"):
        GroupChat(["haruhi", "sherlock"], session=session.id, sessions=store, llm=ScriptedBackend(), embedder="hash")
    again.undo()
    assert len(GroupChat(session=session.id, sessions=store, llm=ScriptedBackend(), embedder="hash").history) == 1
    store.close()


def test_a_character_remembers_only_what_was_said_while_present():
    g = group(history_tokens=80, order="list", max_replies=1)
    g.chat("我的猫叫豆豆，春日你记住")
    for text in ("今天天气不错", "我们去活动室吧", "你在看什么书", "下午有体育课", "社团活动几点开始"):
        g.chat(text)
    g.add("sherlock")
    g.chat("我的猫叫什么？", speakers=["haruhi"])
    assert "豆豆" in "\n".join(m.content for m in g.backend.calls[-1])
    g.chat("我的猫叫什么？", speakers=["sherlock"])
    assert "豆豆" not in "\n".join(m.content for m in g.backend.calls[-1])
    assert len(g.memory.of("sherlock").entries) == 1 < len(g.memory.of("haruhi").entries)


def test_group_facts_and_their_budget():
    g = group(memory_tokens=60)
    fact = g.memory.pin("我叫小林")
    g.chat("春日，悟空，我是谁？")
    assert all("我叫小林" in c[0].content for c in g.backend.calls)
    with pytest.raises(BudgetError, match=r"the fact is \d+ tokens"):
        g.memory.pin("很长的故事" * 40)
    g.memory.edit(fact.id, "我叫小林，是新来的")
    assert [f.text for f in g.memory.facts] == ["我叫小林，是新来的"]
    g.memory.forget(fact.id)
    assert g.memory.facts == [] and g.memory.of("wukong").facts == []


def test_save_and_load_a_group(tmp_path):
    g = group()
    g.chat("春日，悟空，大家好")
    g.memory.pin("我叫小林")
    g.save(tmp_path / "g.json")
    again = GroupChat.load(tmp_path / "g.json", llm=ScriptedBackend(["春日:「嗯」"]), embedder="hash")
    assert again.history == g.history and [f.text for f in again.memory.facts] == ["我叫小林"]
    (tmp_path / "bad.json").write_text("{}", encoding="utf-8")
    with pytest.raises(SessionError, match="cannot read the saved group conversation"):
        GroupChat.load(tmp_path / "bad.json", llm=ScriptedBackend())
