"""Story reuse: a turn keeps the previous turn's story while it still serves, so the prompt's prefix repeats.

保留上一轮的故事：只要它仍包含新消息最相关的片段，提示词的前缀就不变，本地模型的 KV 缓存可以复用。
"""

from __future__ import annotations

import pytest

from chatharuhi import ChatHaruhi
from chatharuhi.backends.scripted import ScriptedBackend
from chatharuhi.errors import InputError
from chatharuhi.prompting.packing import Budget, HistoryTurn, LoreUnit, SceneUnit, pack
from chatharuhi.prompting.reuse import StoryMemory, relevant
from chatharuhi.prompting.tokens import CharCounter
from chatharuhi.types import Turn

COUNTER = CharCounter()
QUESTION = "我们今天去找外星人吧，你觉得他们会在哪里？"


def bot(**kw):
    backend = ScriptedBackend(["春日:「好啊！」"])
    kw.setdefault("story_reuse", True)
    kw.setdefault("story_tokens", 400)
    return ChatHaruhi(role="haruhi", llm=backend, embedder="hash", **kw), backend


def test_the_same_topic_keeps_the_story_and_each_prompt_extends_the_one_before():
    b, backend = bot()
    kept = []
    for _ in range(3):
        b.chat(QUESTION, role="阿虚")
        kept.append(b.last_trace.story_kept)
    assert kept == [False, True, True]
    first, second, third = backend.calls
    assert first[0] == second[0] == third[0]  # the system message holds the same story
    assert third[: len(second) - 1] == second[:-1]  # only the newest exchange and the message are new
    assert b.last_trace.included_scenes and b.prompt.header.strip() in third[0].content


def test_a_message_about_another_scene_replaces_the_story():
    b, backend = bot()
    b.chat(QUESTION, role="阿虚")
    story = set(b.last_trace.included_scenes)
    other = next(s for s in b.index.scenes if s.parent not in {i.split("#")[0] for i in story} and len(s.text) > 80)
    b.chat(other.text[:200], role="阿虚")  # the scene's own words: it ranks first
    assert b.last_trace.story_kept is False
    assert any(i.split("#")[0] == other.parent for i in b.last_trace.included_scenes)
    assert backend.calls[1][0] != backend.calls[0][0]


def test_a_stateless_caller_passing_the_conversation_gets_the_same_reuse():
    """The HTTP server sends the whole conversation each time: the key is the conversation, not the bot."""
    b, _ = bot()
    b.prepare(QUESTION, role="阿虚", history=[])
    plan = b.prepare(QUESTION, role="阿虚", history=[Turn("阿虚", QUESTION, "好啊！")])
    assert plan.trace.story_kept is True
    other = b.prepare(QUESTION, role="阿虚", history=[Turn("阿虚", "别的对话", "好啊！")])
    assert other.trace.story_kept is False  # another conversation remembers nothing of this one


def test_regenerate_keeps_the_story_of_the_turn_it_replaces():
    b, backend = bot()
    b.chat(QUESTION, role="阿虚")
    b.chat(QUESTION, role="阿虚")
    "".join(b.regenerate())
    assert b.last_trace.story_kept is True
    assert backend.calls[-1] == backend.calls[-2]  # the same prompt again: the KV cache holds all of it


def test_reuse_off_retrieves_afresh_and_a_local_backend_then_keeps_scenes_after_the_history():
    backend = ScriptedBackend(["春日:「好啊！」"])
    backend.prompt_layout = "stable_story"
    b = ChatHaruhi(role="haruhi", llm=backend, embedder="hash", story_reuse=False)
    b.chat(QUESTION, role="阿虚")
    b.chat(QUESTION, role="阿虚")
    assert b.last_trace.story_kept is None
    system, *_, last = backend.calls[-1]
    header = b.prompt.header.strip()
    assert header not in system.content and header in last.content  # "stable_prefix"
    on = ChatHaruhi(role="haruhi", llm=backend, embedder="hash")  # None: the backend asks for reuse
    on.chat(QUESTION, role="阿虚")
    assert on.last_trace.story_kept is False and header in backend.calls[-1][0].content
    small = ChatHaruhi(role="haruhi", llm=backend, embedder="hash", story_tokens=300)  # too small to split
    small.chat(QUESTION, role="阿虚")
    assert small.last_trace.story_kept is None and header in backend.calls[-1][-1].content


def test_story_reuse_must_be_a_bool_or_none():
    with pytest.raises(InputError, match="story_reuse"):
        bot(story_reuse="yes")


# -- the pieces ---------------------------------------------------------------------------------------------
def unit(i, parent="", span=None):
    return SceneUnit(f"u{i}", f"###\n场景{i}", 1.0, parent, span)


def test_the_kept_story_is_relevant_while_a_fresh_story_would_share_lines_with_it():
    kept = [unit(1, "a.txt", (1, 10)), unit(2, "b.txt")]
    budget = COUNTER.count(unit(0).text) * 2  # a fresh story holds two units
    assert relevant(kept, [unit(3, "c.txt"), unit(4, "a.txt", (8, 20))], COUNTER, budget)
    assert relevant(kept, [unit(3, "b.txt", (1, 3))], COUNTER, budget)  # a window of a scene kept whole
    assert not relevant(kept, [unit(3, "a.txt", (11, 20)), unit(4, "c.txt")], COUNTER, budget)  # other lines
    assert not relevant(kept, [unit(3, "c.txt"), unit(4, "d.txt"), unit(5, "a.txt")], COUNTER, budget)
    big = SceneUnit("x", "###\n" + "长" * 100, 1.0, "x")  # over the budget: skipped, as the packer skips it
    assert relevant(kept, [big, unit(3, "c.txt"), unit(4, "b.txt")], COUNTER, budget)
    assert not relevant([], [unit(3, "a.txt")], COUNTER, budget) and not relevant(kept, [], COUNTER, budget)


def test_memory_forgets_the_least_recently_used_conversation():
    memory = StoryMemory(size=2)
    turns = [HistoryTurn(str(i), f"user {i}", f"reply {i}") for i in range(3)]
    packed = pack("sys", "", [unit(1)], [], "q", COUNTER)
    for i in range(3):
        memory.remember(turns[:i], turns[i].user, [unit(1)], packed)
    assert memory.recall(turns[:1]) is None  # the oldest of three was forgotten
    assert memory.recall(turns[:2]).scenes == (unit(1),) and memory.recall(turns[:3]) is not None
    assert memory.recall([]) is None


def turns(n, size=6):
    return [HistoryTurn(str(i), "问" * size, "答" * size) for i in range(n)]


def test_history_from_keeps_its_start_while_it_fits_then_restarts_at_half_the_budget():
    budget = Budget(context_window=2000, reply_reserve=100, story_tokens=100, history_tokens=60)
    fresh = pack("系统", "", [], turns(6), "问", COUNTER, budget, layout="stable_story")
    newest = [t.id for t in fresh.trace.turns if t.included]
    assert newest and newest[-1] == "5" and "0" not in newest
    start = newest[0]
    kept = pack("系统", "", [], turns(6)[: int(start) + 1], "问", COUNTER, budget, layout="stable_story",
                history_from=start)
    assert [t.id for t in kept.trace.turns if t.included] == [start]
    grown = pack("系统", "", [], turns(7), "问", COUNTER, budget, layout="stable_story", history_from=start)
    restarted = [t for t in grown.trace.turns if t.included]
    assert restarted[-1].id == "6" and sum(t.tokens for t in restarted) <= budget.history_tokens // 2
    assert any("restarted" in t.reason for t in grown.trace.turns if not t.included)


def test_stable_story_puts_the_story_in_the_system_message_and_lore_with_the_query():
    lore = [LoreUnit("l1", "SOS团：春日创立的社团")]
    p = pack("系统", "经典桥段：", [unit(1)], turns(1), "阿虚:「你好」", COUNTER,
             Budget(context_window=2000, lore_tokens=50), lore=lore, lore_header="设定：", layout="stable_story")
    system, user, assistant, last = p.messages
    assert "场景1" in system.content and "SOS团" not in system.content
    assert last.content.startswith("设定：") and "SOS团" in last.content and last.content.endswith("阿虚:「你好」")
    assert p.trace.total_tokens == COUNTER.count_messages(p.messages)


def test_fresh_scenes_go_with_the_query_and_skip_what_the_kept_story_holds():
    budget = Budget(context_window=4000, reply_reserve=100, story_tokens=100, history_tokens=100)
    kept = [SceneUnit("a#1-5", "###\n" + "甲" * 40, 0.9, "a", (1, 5)), SceneUnit("b", "###\n" + "乙" * 40, 0.8)]
    fresh = [SceneUnit("a#3-4", "###\n" + "丙" * 10, 0.9, "a", (3, 4)), SceneUnit("c", "###\n" + "丁" * 10, 0.7),
             SceneUnit("d", "###\n" + "戊" * 40, 0.6)]
    p = pack("系统", "桥段：", kept, turns(1), "阿虚:「你好」", COUNTER, budget, layout="stable_story",
             fresh_scenes=fresh)
    system, *_, last = p.messages
    # The kept story may use 70 of the 100 story tokens: the first kept scene fits, the second does not.
    assert "甲" in system.content and "乙" not in system.content
    assert "丙" not in last.content  # lines the kept story already holds
    assert last.content.startswith("桥段：") and "丁" in last.content and last.content.endswith("阿虚:「你好」")
    assert "戊" not in last.content  # over what is left of the story budget
    assert p.scene_ids == ["a#1-5", "c"] and p.trace.total_tokens == COUNTER.count_messages(p.messages)
    assert p.trace.parts["story"] <= budget.story_tokens
    with pytest.raises(InputError, match="stable_story"):
        pack("系统", "", kept, [], "q", COUNTER, budget, layout="stable_prefix", fresh_scenes=fresh)


def test_a_turn_that_excludes_scenes_never_gets_them_back_from_a_kept_story():
    """Evaluation excludes a case's own scene: a story kept from an earlier turn must not bring it back."""
    b, _ = bot(story_tokens=1500)
    b.prepare(QUESTION, role="阿虚", history=[])
    history = [Turn("阿虚", QUESTION, "好啊！")]
    kept = b.prepare(QUESTION, role="阿虚", history=history)
    assert kept.trace.story_kept is True and len(kept.trace.included_scenes) >= 3
    excluded = kept.trace.included_scenes[0].split("#")[0]
    plan = b.prepare(QUESTION, role="阿虚", history=history, exclude=[excluded])
    assert plan.trace.story_kept is False
    assert all(i.split("#")[0] != excluded for i in plan.trace.included_scenes)


def test_without_story_reuse_a_caching_backend_still_keeps_where_its_history_starts():
    """The embedded model (stable_prefix): once the history is full, dropping the oldest turn on every turn
    changed the prefix every turn; keeping its start and restarting at half the budget changes it rarely."""
    backend = ScriptedBackend(["春日:「好啊！我们明天就去车站前集合，谁迟到谁请客！」"])
    backend.prompt_layout = "stable_prefix"
    b = ChatHaruhi(role="haruhi", llm=backend, embedder="hash", story_tokens=200, history_tokens=240)
    for i in range(12):
        b.chat(f"第{i}个问题：我们明天去哪里？", role="阿虚")
    calls = backend.calls
    assert all(c[-1].content.count("###") for c in calls)  # the scenes ride with the message
    history = [len(c) // 2 - 1 for c in calls]
    assert max(history) >= 3 and min(history[3:]) >= 1  # it holds several turns, and never empties
    breaks = sum(calls[n][: len(calls[n - 1]) - 1] != calls[n - 1][:-1] for n in range(1, len(calls)))
    assert breaks <= 3, breaks  # dropping the oldest turn each time would break it on every full turn
