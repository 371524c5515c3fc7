"""Long-term memory: turns that left the history window come back, pinned facts, the rolling summary, and the
memory kept with the session (SQLite and a real PostgreSQL): exported, deleted, rebuilt when damaged."""

from __future__ import annotations

import json
import sqlite3
import threading
import warnings

import pytest

from chatharuhi import Chatbot
from chatharuhi.backends.scripted import ScriptedBackend
from chatharuhi.errors import BudgetError, InputError
from chatharuhi.sessions import SessionStore

FILLER = ["今天天气不错", "我们去活动室吧", "你在看什么书", "下午有体育课", "社团活动几点开始", "这个周末有空吗",
          "电脑研究社又来了", "古泉在下棋", "朝比奈学姐泡了茶", "长门还在看书"]


def bot(replies=("春日:「嗯。」",), **kw):
    kw.setdefault("embedder", "hash")
    kw.setdefault("history_tokens", 120)
    backend = kw.pop("backend", None) or ScriptedBackend(list(replies))
    return Chatbot("haruhi", llm=backend, **kw)


def prompt_text(b) -> str:
    return "\n".join(m.content for m in b.backend.calls[-1])


def talk(b, n=10):
    for text in FILLER[:n]:
        b.chat(text)


def past_the_summary_mark(b):
    """Enough turns for MEMORY_SUMMARY_EVERY of them to leave the window."""
    talk(b)
    b.chat("还有呢")
    b.chat("然后呢")


def test_a_fact_that_left_the_window_comes_back_when_asked():
    b = bot()
    b.chat("我的猫叫豆豆，它是一只橘猫")
    talk(b)
    assert not any(t.included for t in b.last_trace.turns[:1])  # the first turn left the window long ago
    b.chat("你还记得我的猫叫什么吗？")
    assert "豆豆" in prompt_text(b)
    recalled = [m for m in b.last_trace.memory if m.included]
    assert recalled and recalled[0].key == "recalled" and recalled[0].id == "turn:0"
    assert b.last_trace.parts["memory"] > 0 and b.last_trace.memory_budget > 0
    assert b.last_trace.total_tokens == sum(b.last_trace.parts.values())


def test_memory_off_forgets_what_left_the_window():
    b = bot(memory=False)
    b.chat("我的猫叫豆豆，它是一只橘猫")
    talk(b)
    b.chat("你还记得我的猫叫什么吗？")
    assert "豆豆" not in prompt_text(b)
    assert b.last_trace.memory == [] and "memory" not in b.last_trace.parts


def test_a_turn_still_in_the_window_is_not_repeated_as_memory():
    b = bot(history_tokens=1200)
    b.chat("我的猫叫豆豆")
    b.chat("你还记得我的猫叫什么吗？")
    assert prompt_text(b).count("我的猫叫豆豆") == 1  # in the history, not again in memory


def test_memory_follows_undo_and_edit():
    b = bot()
    b.chat("我的猫叫豆豆")
    talk(b)
    b.edit_last("长门还在看书吗")
    b.undo()
    b.undo()
    b.chat("你还记得我的猫叫什么吗？")
    assert "豆豆" in prompt_text(b)
    assert [e.words.split("\n")[0] for e in b.memory.entries][-1] == FILLER[7]


def test_pinned_facts_are_in_every_prompt_editable_and_deletable():
    b = bot()
    fact = b.memory.pin("我的名字是小林")
    b.chat("早上好")
    assert "我的名字是小林" in prompt_text(b) and "阿虚请你记住" in prompt_text(b)
    assert [m.id for m in b.last_trace.memory if m.included] == [f"fact:{fact.id}"]
    b.memory.edit(fact.id, "我的名字是小林，今年十六岁")
    b.chat("再见")
    assert "十六岁" in prompt_text(b)
    b.memory.forget(fact.id)
    b.chat("还在吗")
    assert "小林" not in prompt_text(b) and b.memory.facts == []
    with pytest.raises(InputError, match="no pinned fact"):
        b.memory.forget(fact.id)


def test_a_fact_over_the_memory_budget_is_refused_with_its_size():
    b = bot(memory_tokens=60)
    b.memory.pin("我叫小林")
    with pytest.raises(BudgetError, match=r"the fact is \d+ tokens, but only \d+ of the memory budget \(60 tokens\)") \
            as exc:
        b.memory.pin("我最喜欢的东西是" + "很长的故事" * 20)
    assert exc.value.part == "memory" and exc.value.tokens > exc.value.budget
    assert [f.text for f in b.memory.facts] == ["我叫小林"]  # nothing changed
    with pytest.raises(InputError, match="empty fact"):
        b.memory.pin("   ")


def test_a_callers_own_history_is_its_memory():
    from chatharuhi.types import Turn

    b = bot()
    history = [Turn("阿虚", "我的猫叫豆豆", "好名字")] + [Turn("阿虚", t, "嗯") for t in FILLER]
    b.chat("我的猫叫什么？", history=history)
    assert "豆豆" in prompt_text(b)
    assert b.history == [] and len(b.memory) == 0  # the bot's own conversation is untouched


# -- the rolling summary ---------------------------------------------------------------------------
class Summarizing(ScriptedBackend):
    """Replies as 春日; a summary request (its system message asks for one) gets ``summary``, a callable."""

    def __init__(self, summary):
        super().__init__()
        self.summary, self.summary_calls = summary, 0

    def _reply_for(self, messages):
        if "概要" in messages[0].content and messages[0].content.startswith("你负责记录"):
            self.summary_calls += 1
            return self.summary()
        return "春日:「嗯。」"


def test_summarize_writes_a_rolling_summary_in_the_background():
    backend = Summarizing(lambda: "阿虚养了一只叫豆豆的橘猫。")
    b = bot(backend=backend, summarize=True, memory_tokens=200)
    b.chat("我的猫叫豆豆")
    past_the_summary_mark(b)
    b.memory.summarizer.thread.join(10)
    assert backend.summary_calls == 1 and b.memory.summary == "阿虚养了一只叫豆豆的橘猫。"
    b.chat("说点什么")
    assert "之前的对话概要：阿虚养了一只叫豆豆的橘猫。" in prompt_text(b)
    request = next(c for c in backend.calls if c[0].content.startswith("你负责记录"))
    assert "我的猫叫豆豆" in request[1].content  # what left the window was sent to be summarized


def test_a_failed_summary_never_costs_the_reply_and_is_noted():
    def fail():
        raise ConnectionError("upstream down")

    b = bot(backend=Summarizing(fail), summarize=True)
    b.chat("我的猫叫豆豆")
    past_the_summary_mark(b)
    b.memory.summarizer.thread.join(10)
    assert b.chat("说点什么") == "嗯。"
    notes = [m for m in b.last_trace.memory if m.key == "note"]
    assert notes and "ConnectionError: upstream down" in notes[0].reason
    assert b.memory.summary is None


def test_a_summary_that_hangs_never_blocks_a_reply_and_times_out():
    release = threading.Event()

    def hang():
        release.wait(30)
        return "太晚了"

    b = bot(backend=Summarizing(hang), summarize=True)
    b.memory.summarizer.timeout = 0.0
    b.chat("我的猫叫豆豆")
    past_the_summary_mark(b)
    assert b.memory.summarizer.thread.is_alive()  # still waiting on the upstream
    assert b.chat("说点什么") == "嗯。"  # the reply came anyway
    assert any("did not answer within" in m.reason for m in b.last_trace.memory if m.key == "note")
    release.set()
    b.memory.summarizer.thread.join(10)
    assert b.memory.summary is None  # the late answer was dropped


def test_summarize_needs_memory():
    with pytest.raises(InputError, match="summarize=True needs memory=True"):
        bot(memory=False, summarize=True)


# -- kept with the session ---------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def target(request, tmp_path):
    if request.param == "sqlite":
        return tmp_path / "s.sqlite3"
    return request.getfixturevalue("pg_url")


def test_memory_is_stored_with_the_session_exported_and_deleted(target):
    store = SessionStore(target)
    b = bot(sessions=store)
    fact = b.memory.pin("我的名字是小林")  # before the first turn: the session starts now
    b.chat("我的猫叫豆豆")
    talk(b, 4)
    sid = b.session.id
    assert len(store.memory_vectors(sid, b.index.embedder.id)) == 5  # every message's vector, none embedded twice
    again = bot(session=sid, sessions=store)
    assert [f.text for f in again.memory.facts] == ["我的名字是小林"]
    again.chat("你还记得我的猫叫什么吗？")
    assert "豆豆" in prompt_text(again) and "我的名字是小林" in prompt_text(again)
    exported = json.loads(store.export(sid))
    assert exported["memory"]["facts"] == [{"id": fact.id, "text": "我的名字是小林", "character": ""}]
    again.memory.edit(fact.id, "我叫小林")
    assert [f.text for f in store.facts(sid)] == ["我叫小林"]
    store.delete(sid)
    other = store.create("haruhi", "阿虚")
    assert store.facts(other.id) == [] and store.memory_vectors(other.id, b.index.embedder.id) == {}
    if hasattr(store, "path"):  # behind the store's back: the rows are gone, not hidden
        with sqlite3.connect(store.path) as db:
            for table in ("memory_facts", "memory_vectors"):
                assert db.execute(f"SELECT COUNT(*) FROM {table} WHERE session_id = ?", (sid,)).fetchone() == (0,)
    store.close()


def test_a_damaged_memory_index_is_rebuilt_from_the_stored_turns_with_a_warning(tmp_path):
    store = SessionStore(tmp_path / "s.sqlite3")
    b = bot(sessions=store)
    b.chat("我的猫叫豆豆")
    talk(b, 6)
    sid = b.session.id
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE memory_vectors SET vector = ? WHERE rowid IN (SELECT rowid FROM memory_vectors LIMIT 2)",
                   (b"\x00garbage",))
    from chatharuhi.retrieval.turns import query_vectors

    query_vectors._items.clear()  # a new process: nothing remembered
    with pytest.warns(RuntimeWarning, match=rf"memory index of session {sid} is damaged \(2 of 7 vectors"):
        again = bot(session=sid, sessions=store)
    again.chat("你还记得我的猫叫什么吗？")
    assert "豆豆" in prompt_text(again)
    vectors = store.memory_vectors(sid, b.index.embedder.id)
    assert len(vectors) == 8 and all(len(v) == 4 * b.index.embedder.dim for v in vectors.values())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt: the next resume is silent
        bot(session=sid, sessions=store)
    store.close()


def test_an_older_sqlite_file_gains_the_memory_tables_and_keeps_its_turns(tmp_path):
    path = tmp_path / "old.sqlite3"
    store = SessionStore(path)
    s = store.create("haruhi", "阿虚")
    from chatharuhi.types import Turn

    store.append_turn(s.id, Turn("阿虚", "一", "好"))
    store.close()
    with sqlite3.connect(path) as db:  # as a chatharuhi of schema 1 left it
        for table in ("memory_facts", "memory_summaries", "memory_vectors"):
            db.execute(f"DROP TABLE {table}")
        db.execute("PRAGMA user_version = 1")
    with SessionStore(path) as store:
        assert store.turns(s.id) == [Turn("阿虚", "一", "好")]
        store.add_fact(s.id, "我叫小林")
        assert [f.text for f in store.facts(s.id)] == ["我叫小林"]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
