"""The chatbot: turns, streaming, history commits only on completion, sharing, persistence."""

from __future__ import annotations

import asyncio
import threading

import pytest

from chatharuhi import ChatHaruhi
from chatharuhi.backends.scripted import ScriptedBackend
from chatharuhi.errors import BackendUnavailable, BudgetError, CharacterNotFound, InputError, SessionError


def bot(replies=None, **kw):
    kw.setdefault("embedder", "hash")
    return ChatHaruhi(role="haruhi", llm=ScriptedBackend(replies or ["春日:「好啊！」"], **kw.pop("backend", {})), **kw)


def test_chat_returns_the_characters_words_and_commits_a_turn():
    b = bot(["春日:「外星人？今天就去找！」"])
    assert b.chat(text="我们去找外星人吧", role="阿虚") == "外星人？今天就去找！"
    (turn,) = b.history
    assert (turn.user_role, turn.text, turn.reply) == ("阿虚", "我们去找外星人吧", "外星人？今天就去找！")


def test_messages_layout_and_role_name_in_query():
    backend = ScriptedBackend(["春日:「哼」"])
    b = ChatHaruhi(role="haruhi", llm=backend, embedder="hash")
    b.chat("今天的活动是什么？", role="阿虚")
    b.chat(role="古泉", text="我也想知道")  # ChatHaruhi's keyword style
    last = backend.calls[-1]
    assert [m.role for m in last] == ["system", "user", "assistant", "user"]
    assert last[0].content.startswith(b.character.system_prompt)
    assert "经典桥段" in last[0].content
    assert last[1].content == "阿虚:「今天的活动是什么？」"
    assert last[2].content == "春日:「哼」"
    assert last[3].content == "古泉:「我也想知道」"


def test_stream_yields_chunks_and_history_only_after_completion():
    b = bot(["春日:「一二三四五六七八九十」"], backend={"chunk_size": 2})
    reply = b.stream("数数")
    chunks = []
    for chunk in reply:
        chunks.append(chunk)
        assert b.history == []  # not yet committed
    assert len(chunks) > 2 and "".join(chunks) == "一二三四五六七八九十"
    assert len(b.history) == 1 and reply.text() == "一二三四五六七八九十"


def test_failed_stream_leaves_history_unchanged():
    b = bot(["春日:「第一句」", "春日:「这一句会断掉」"], backend={"chunk_size": 2})
    b.chat("一")
    b.backend.fail_after = 2
    with pytest.raises(ConnectionError):
        b.chat("二")
    assert [t.text for t in b.history] == ["一"]


def test_cancelled_stream_leaves_history_unchanged():
    b = bot(["春日:「很长很长很长很长的回答」"], backend={"chunk_size": 1})
    reply = iter(b.stream("说吧"))
    next(reply)
    reply.close()  # the consumer stops reading
    assert b.history == []


def test_post_processing_cuts_the_user_line():
    b = bot(["春日:「跟我来！」\n阿虚:「我才不去」\n春日:「必须去」"])
    assert b.chat("去哪") == "跟我来！"
    assert ScriptedBackend in type(b.backend).__mro__


def test_post_processing_can_be_turned_off():
    raw = "春日:「跟我来！」\n阿虚:「我才不去」"
    assert bot([raw], postprocess=False).chat("去哪") == raw


def test_trace_shows_scenes_and_tokens():
    b = bot()
    b.chat("棒球比赛")
    t = b.last_trace
    assert t.included_scenes and t.total_tokens == sum(t.parts.values())
    assert set(t.timings_ms) == {"embed", "retrieve", "memory", "pack"}
    assert all(s.score is not None for s in t.scenes)


def test_query_is_embedded_without_the_role_name():
    seen = []

    class Recording:
        id, dim = "rec", 8

        def embed_documents(self, texts):
            import numpy as np

            v = np.ones((len(texts), 8), dtype="float32")
            return v / np.linalg.norm(v, axis=1, keepdims=True)

        def embed_query(self, text):
            seen.append(text)
            return self.embed_documents([text])[0]

    b = ChatHaruhi(role="haruhi", llm=ScriptedBackend(["春日:「嗯」"]), embedder=Recording())
    b.chat("今天吃什么", role="阿虚")
    assert seen == ["今天吃什么"]


def test_top_k_zero_sends_no_scenes():
    backend = ScriptedBackend(["春日:「嗯」"])
    b = ChatHaruhi(role="haruhi", llm=backend, embedder="hash", top_k=0)
    b.chat("你好")
    assert backend.calls[0][0].content == b.character.system_prompt
    assert b.last_trace.scenes == [] and b.last_trace.parts["story"] == 0


def test_empty_message_is_an_input_error():
    b = bot()
    for bad in ["", "   ", None]:
        with pytest.raises(InputError, match="empty message"):
            b.chat(bad)
    assert b.history == []


def test_message_longer_than_budget_is_a_budget_error_and_loses_nothing():
    b = bot(context_window=1200, reply_reserve=200)
    b.chat("你好")
    with pytest.raises(BudgetError) as err:
        b.chat("长" * 5000)
    assert err.value.part == "query"
    assert len(b.history) == 1


def test_unknown_character_never_falls_back():
    with pytest.raises(CharacterNotFound, match="haruhi"):
        ChatHaruhi(role="harhui", llm=ScriptedBackend(), embedder="hash")


def test_no_backend_configured_says_how(monkeypatch):
    monkeypatch.setattr("chatharuhi.models.embedded.embedded_available", lambda: False)
    with pytest.raises(BackendUnavailable) as err:
        ChatHaruhi(role="haruhi", embedder="hash")
    assert "OPENAI_API_KEY" in str(err.value) and "--backend" in str(err.value)


def test_backend_from_environment(monkeypatch):
    monkeypatch.setenv("CHATHARUHI_BACKEND", "scripted")
    assert ChatHaruhi(role="haruhi", embedder="hash").backend.name == "scripted"


def test_many_bots_share_one_index_but_not_history():
    a, b = bot(), bot()
    assert a.index is b.index and a.embedder is b.embedder
    a.chat("一")
    assert len(a.history) == 1 and b.history == []


def test_concurrent_bots_keep_their_own_histories():
    bots = [bot([f"春日:「回答{i}」"]) for i in range(6)]
    errors = []

    def run(i):
        try:
            for n in range(5):
                assert bots[i].chat(f"用户{i}问题{n}") == f"回答{i}"
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, b in enumerate(bots):
        assert [t.text for t in b.history] == [f"用户{i}问题{n}" for n in range(5)]


def test_one_bot_used_from_many_threads_commits_every_turn():
    b = bot(["春日:「好」"])
    threads = [threading.Thread(target=b.chat, args=(f"问{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(t.text for t in b.history) == sorted(f"问{i}" for i in range(8))


def test_async_twins():
    b = bot(["春日:「异步也行」"], backend={"chunk_size": 2})

    async def go():
        chunks = [c async for c in b.astream("异步？")]
        whole = await b.achat("再来")
        return chunks, whole

    chunks, whole = asyncio.run(go())
    assert "".join(chunks) == "异步也行" == whole and len(chunks) > 1
    assert [t.text for t in b.history] == ["异步？", "再来"]


def test_save_and_load(tmp_path):
    b = bot(["春日:「记住了」"])
    b.chat("记住我", role="阿虚")
    b.save(tmp_path / "conv.json")
    restored = ChatHaruhi.load(tmp_path / "conv.json", llm=ScriptedBackend(["春日:「嗯」"]), embedder="hash")
    assert restored.history == b.history and restored.character.name == "haruhi"
    restored.chat("还记得吗")
    assert restored.backend.calls[0][1].content == "阿虚:「记住我」"


def test_load_bad_file_names_it(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(SessionError, match="bad.json"):
        ChatHaruhi.load(bad, llm=ScriptedBackend(), embedder="hash")


def test_reset():
    b = bot()
    b.chat("一")
    b.reset()
    assert b.history == [] and b.last_trace is None


def test_english_character_uses_english_templates():
    backend = ScriptedBackend(["Holmes:「Elementary.」\nWatson:「Indeed.」"])
    b = ChatHaruhi(role="sherlock", llm=backend, embedder="hash")
    assert b.chat("Who did it?") == "Elementary."
    assert "classic scenes" in backend.calls[0][0].content.lower()
    assert backend.calls[0][-1].content == "Watson:「Who did it?」"


def test_folder_character_by_path(tmp_path):
    from pathlib import Path

    folder = tmp_path / "mine"
    (folder / "texts").mkdir(parents=True)
    (folder / "system_prompt.txt").write_text("你是小明。", encoding="utf-8")
    (folder / "texts" / "1.txt").write_text("小明:「我喜欢猫」\n小红:「我也是」", encoding="utf-8")
    b = ChatHaruhi(role=Path(folder), llm=ScriptedBackend(["小明:「喵」"]), embedder="hash")
    assert b.chat("猫") == "喵" and b.character.speaker == "小明"


def test_near_duplicate_scenes_are_dropped_and_traced(tmp_path):
    from pathlib import Path

    folder = tmp_path / "dup"
    (folder / "texts").mkdir(parents=True)
    (folder / "system_prompt.txt").write_text("你是小明。", encoding="utf-8")
    for name in ("a.txt", "b.txt"):
        (folder / "texts" / name).write_text("小明:「我喜欢猫」\n小红:「我也是」", encoding="utf-8")
    (folder / "texts" / "c.txt").write_text("小明:「今天下雨」", encoding="utf-8")
    b = ChatHaruhi(role=Path(folder), llm=ScriptedBackend(["小明:「喵」"]), embedder="hash")
    b.chat("猫")
    reasons = {s.id: s.reason for s in b.last_trace.scenes}
    assert reasons["b.txt"] == "near-duplicate of a.txt" and "a.txt" in b.last_trace.included_scenes


def test_stateless_turn_with_given_history_is_not_committed():
    from chatharuhi import Turn

    backend = ScriptedBackend(["春日:「记得」"])
    b = ChatHaruhi(role="haruhi", llm=backend, embedder="hash")
    given = [Turn("阿虚", "昨天说了什么", "说要去找外星人")]
    assert b.chat("还记得吗", history=given) == "记得"
    assert b.history == []
    assert backend.calls[0][1].content == "阿虚:「昨天说了什么」"
    assert backend.calls[0][2].content == "春日:「说要去找外星人」"


def test_backend_budget_hint_sets_defaults_but_arguments_win():
    small = ScriptedBackend(["春日:「嗯」"])
    small.budget_hint = {"story_tokens": 300, "history_tokens": 200, "reply_reserve": 128}
    b = ChatHaruhi(role="haruhi", llm=small, embedder="hash")
    assert (b.budget.story_tokens, b.budget.history_tokens, b.budget.reply_reserve) == (300, 200, 128)
    b2 = ChatHaruhi(role="haruhi", llm=small, embedder="hash", story_tokens=900)
    assert b2.budget.story_tokens == 900 and b2.budget.history_tokens == 200
    b.chat("你好")
    assert b.last_trace.parts["story"] <= 300
