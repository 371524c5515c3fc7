"""The packer: exact budgets, skipped (not stopped) scenes, whole newest turns, typed errors."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatharuhi.character.folder import load_character
from chatharuhi.errors import BudgetError
from chatharuhi.prompting.packing import Budget, HistoryTurn, LoreUnit, MemoryUnit, SceneUnit, pack
from chatharuhi.prompting.tokens import CharCounter, TiktokenCounter

HEADER = "以下是经典桥段："


def units(*texts):
    return [SceneUnit(f"s{i}", f"###\n{t}", 1.0 - i / 100) for i, t in enumerate(texts)]


def turns(*pairs):
    return [HistoryTurn(str(i), u, a) for i, (u, a) in enumerate(pairs)]


def test_layout_system_scenes_history_query():
    p = pack("你是春日。", HEADER, units("甲:「一」", "乙:「二」"), turns(("阿虚:「早」", "春日:「早！」")),
             "阿虚:「走吧」", CharCounter())
    roles = [m.role for m in p.messages]
    assert roles == ["system", "user", "assistant", "user"]
    system = p.messages[0].content
    assert system.startswith("你是春日。\n\n" + HEADER)
    assert system.index("甲:「一」") < system.index("乙:「二」")
    assert p.messages[-1].content == "阿虚:「走吧」"
    assert p.trace.included_scenes == ["s0", "s1"]


def test_oversize_scene_is_skipped_not_a_stop():
    counter = CharCounter()
    p = pack("系统", HEADER, units("大" * 500, "小一", "小二"), [], "问", counter,
             Budget(context_window=2000, reply_reserve=100, story_tokens=100, history_tokens=100))
    assert p.trace.included_scenes == ["s1", "s2"]
    big = p.trace.scenes[0]
    assert not big.included and "larger than the story budget" in big.reason
    assert p.trace.parts["story"] <= 100


def test_story_fills_past_a_scene_that_does_not_fit():
    p = pack("系统", HEADER, units("a" * 60, "b" * 60, "c" * 10), [], "问", CharCounter(),
             Budget(context_window=2000, reply_reserve=0, story_tokens=91, history_tokens=0))
    # 91 = "\n\n" (2) + header line (9) + "###\n" + 60 chars + "\n" (65) + "###\n" + 10 chars + "\n" (15)
    assert p.trace.included_scenes == ["s0", "s2"]
    assert p.trace.scenes[1].reason == "over the story budget"


def test_history_keeps_newest_whole_turns_within_share():
    hist = turns(*[(f"阿虚:「第{i}句」", "春日:「" + "嗯" * 40 + "」") for i in range(10)])
    p = pack("系统", HEADER, [], hist, "问", CharCounter(),
             Budget(context_window=5000, reply_reserve=0, story_tokens=0, history_tokens=200))
    kept = [t.id for t in p.trace.turns if t.included]
    assert kept == ["7", "8", "9"]  # newest, contiguous
    assert p.trace.parts["history"] <= 200
    contents = [m.content for m in p.messages]
    assert "阿虚:「第9句」" in contents and "阿虚:「第6句」" not in contents


def test_newest_turn_larger_than_share_adds_no_history():
    # ChatHaruhi adds the entire history in this case; we add none.
    hist = turns(("阿虚:「短」", "春日:「短」"), ("阿虚:「长」", "春日:「" + "长" * 500 + "」"))
    p = pack("系统", HEADER, [], hist, "问", CharCounter(), Budget(5000, 0, 0, 100))
    assert [m.role for m in p.messages] == ["system", "user"]
    assert p.trace.parts["history"] == 0


def test_shares_never_exceed_the_window():
    counter = CharCounter()
    p = pack("系统", HEADER, units(*["景" * 50] * 40), turns(*[("阿虚:「问」", "春日:「答」")] * 40), "问", counter,
             Budget(context_window=600, reply_reserve=100, story_tokens=1500, history_tokens=1200))
    assert counter.count_messages(p.messages) <= 500
    mandatory = 2 + (4 + 2) + (4 + 1)  # priming + system message + query message
    assert p.trace.story_budget + p.trace.history_budget == 500 - mandatory
    assert p.trace.story_budget == (500 - mandatory) * 1500 // 2700  # scaled down in proportion


def test_query_longer_than_budget_raises_naming_the_part():
    with pytest.raises(BudgetError) as err:
        pack("系统", HEADER, [], [], "长" * 1000, CharCounter(), Budget(500, 100, 100, 100))
    assert err.value.part == "query" and "shorten the message" in str(err.value)


def test_system_prompt_too_long_raises():
    with pytest.raises(BudgetError) as err:
        pack("系" * 1000, HEADER, [], [], "问", CharCounter(), Budget(500, 100, 100, 100))
    assert err.value.part == "system_prompt" and "system_prompt.txt" in str(err.value)


def test_reserve_larger_than_window_raises():
    with pytest.raises(BudgetError, match="reply_reserve"):
        pack("系统", HEADER, [], [], "问", CharCounter(), Budget(100, 100, 0, 0))


def test_deterministic():
    args = ("系统", HEADER, units("甲", "乙" * 30, "丙"), turns(("u", "a")), "问", CharCounter(),
            Budget(300, 50, 60, 60))
    a, b = pack(*args), pack(*args)
    assert a.messages == b.messages and a.trace == b.trace


def test_trace_parts_sum_to_exact_total_on_real_character(fixtures_dir):
    c = load_character(fixtures_dir / "haruhi")
    counter = TiktokenCounter()
    p = pack(c.system_prompt, HEADER, [SceneUnit(s.id, "###\n" + s.text) for s in c.scenes[:20]],
             turns(*[("阿虚:「你好」", "春日:「哼」")] * 50), "阿虚:「我们去找外星人吧」", counter)
    assert sum(p.trace.parts.values()) == p.trace.total_tokens == counter.count_messages(p.messages)
    assert p.trace.parts["story"] <= 1500 and p.trace.parts["history"] <= 1200
    assert p.trace.story_fill > 0.9  # skipping instead of stopping fills the story block


# -- property: the packed prompt never exceeds the budget by the backend's exact count -------------

_text = st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")), min_size=0, max_size=300)
_lines = st.lists(_text, min_size=1, max_size=6).map("\n".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    system=_lines.filter(str.strip),
    scenes=st.lists(_lines.filter(str.strip), max_size=12),
    history=st.lists(st.tuples(_text, _text), max_size=8),
    query=_text.filter(str.strip),
    window=st.integers(50, 4000),
    reserve=st.integers(0, 500),
    story=st.integers(0, 2000),
    hist=st.integers(0, 2000),
    encoding=st.sampled_from(["cl100k_base", "o200k_base"]),
)
def test_never_over_budget_by_exact_count(system, scenes, history, query, window, reserve, story, hist, encoding):
    counter = TiktokenCounter(encoding=encoding)
    budget = Budget(window, reserve, story, hist)
    try:
        p = pack(system, HEADER, [SceneUnit(str(i), "###\n" + s) for i, s in enumerate(scenes)],
                 [HistoryTurn(str(i), f"阿虚:「{u}」", f"春日:「{a}」") for i, (u, a) in enumerate(history)],
                 f"阿虚:「{query}」", counter, budget)
    except BudgetError as exc:
        assert exc.part in {"query", "system_prompt", "reply_reserve"}
        return
    exact = counter.count_messages(p.messages)
    assert exact == p.trace.total_tokens  # the additive count is the exact count
    assert exact <= budget.prompt_tokens
    assert p.trace.parts["story"] <= p.trace.story_budget
    assert p.trace.parts["history"] <= p.trace.history_budget


# Wider: any first character (punctuation, '/', symbols, digits, letters of any script) in every part, lore
# entries too, both encodings; the trace must equal the exact count, whatever the counter's additivity.
_any = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Co", "Cn")), min_size=0, max_size=120)
_part = st.tuples(st.sampled_from(["/", "/start ", "。", "：", "!", "#", "'s", "1", "a", "春", "", "\u00a0"]),
                  _any).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    system=_part.filter(str.strip),
    header=_part,
    lore=st.lists(st.tuples(_part.filter(str.strip), st.integers(0, 300)), max_size=5),
    lore_header=_part,
    scenes=st.lists(_part.filter(str.strip), max_size=8),
    history=st.lists(st.tuples(_part, _part), max_size=4),
    query=_part.filter(str.strip),
    window=st.integers(80, 3000),
    encoding=st.sampled_from(["cl100k_base", "o200k_base"]),
)
def test_trace_total_is_the_exact_count_for_any_text(system, header, lore, lore_header, scenes, history, query,
                                                     window, encoding):
    counter = TiktokenCounter(encoding=encoding)
    budget = Budget(window, 20, 400, 300, 200)
    try:
        p = pack(system, header, [SceneUnit(str(i), s) for i, s in enumerate(scenes)],
                 [HistoryTurn(str(i), u, a) for i, (u, a) in enumerate(history)], query, counter, budget,
                 lore=[LoreUnit(f"l{i}", t, order) for i, (t, order) in enumerate(lore)], lore_header=lore_header)
    except BudgetError as exc:
        assert exc.part in {"query", "system_prompt"}
        return
    exact = counter.count_messages(p.messages)
    assert p.trace.total_tokens == exact <= budget.prompt_tokens
    assert sum(p.trace.parts.values()) == exact


class _NonAdditive(CharCounter):
    """Charges 40 extra tokens once a prompt has more than five messages (a template that adds a block
    for long conversations): per-message estimates cannot see it, so only the exact recount can."""

    additive = False

    def count_messages(self, messages):
        return super().count_messages(messages) + (40 if len(messages) > 5 else 0)


def test_non_additive_counter_is_fitted_by_exact_recount():
    counter = _NonAdditive()
    hist = turns(*[("阿虚:「问」", "春日:「答」")] * 20)
    p = pack("系统", HEADER, units(*["景" * 20] * 10), hist, "问", counter, Budget(300, 0, 150, 150))
    assert counter.count_messages(p.messages) <= 300
    assert p.trace.total_tokens == counter.count_messages(p.messages)
    assert any(t.reason == "dropped after the exact count" for t in p.trace.scenes + p.trace.turns)


# -- memory ------------------------------------------------------------------------------------------
def _memory(*items):
    return [MemoryUnit(i, text, kind, tuple(t)) for i, text, kind, t in items]


def test_memory_block_comes_before_lore_and_story_with_facts_first():
    mem = _memory(("fact:1", "阿虚的名字是小林。", "fact", ()), ("turn:0", "阿虚:「我的猫叫豆豆」", "recalled", ("0",)))
    p = pack("你是春日。", HEADER, units("甲:「一」"), [], "阿虚:「猫叫什么？」", CharCounter(),
             Budget(4000, 100, 500, 500, 200, 300), lore=[LoreUnit("l0", "北高是县立高中。")], lore_header="设定：",
             memory=mem, memory_header="记忆：")
    system = p.messages[0].content
    assert system.index("记忆：") < system.index("阿虚的名字是小林。") < system.index("豆豆") < system.index("设定：")
    assert system.index("设定：") < system.index(HEADER)
    assert [t.id for t in p.trace.memory if t.included] == ["fact:1", "turn:0"]
    assert [t.key for t in p.trace.memory] == ["fact", "recalled"]
    assert p.trace.parts["memory"] > 0 and p.trace.memory_budget == 300
    assert p.trace.total_tokens == CharCounter().count_messages(p.messages)


def test_a_recalled_turn_still_in_the_history_window_is_left_out():
    hist = turns(("阿虚:「我的猫叫豆豆」", "春日:「哦」"))
    mem = _memory(("turn:0", "阿虚:「我的猫叫豆豆」\n春日:「哦」", "recalled", ("0",)))
    p = pack("你是春日。", HEADER, [], hist, "阿虚:「猫叫什么？」", CharCounter(), memory=mem, memory_header="记忆：")
    assert "记忆：" not in p.messages[0].content
    (part,) = p.trace.memory
    assert not part.included and part.reason == "still in the history window"
    p = pack("你是春日。", HEADER, [], hist, "阿虚:「猫叫什么？」", CharCounter(), Budget(history_tokens=0),
             memory=mem, memory_header="记忆：")
    assert "豆豆" in p.messages[0].content and p.trace.memory[0].included  # out of the window: recalled


def test_memory_over_its_share_is_skipped_and_a_smaller_unit_still_fits():
    mem = _memory(("a", "长" * 80, "recalled", ()), ("b", "短", "recalled", ()))
    p = pack("系统", HEADER, [], [], "问", CharCounter(), Budget(4000, 0, 100, 100, 100, 40), memory=mem)
    assert [(t.id, t.included) for t in p.trace.memory] == [("a", False), ("b", True)]
    assert p.trace.memory[0].reason == "larger than the memory budget"


def test_memory_goes_with_the_query_in_the_cached_prefix_layouts():
    mem = _memory(("fact:1", "阿虚的名字是小林。", "fact", ()))
    for layout in ("stable_prefix", "stable_story"):
        p = pack("你是春日。", HEADER, units("甲:「一」"), turns(("阿虚:「早」", "春日:「早！」")), "阿虚:「我是谁」",
                 TiktokenCounter(), memory=mem, memory_header="记忆：", layout=layout)
        assert "小林" not in p.messages[0].content and "小林" in p.messages[-1].content
        assert p.messages[-1].content.endswith("阿虚:「我是谁」")
        assert p.trace.total_tokens == TiktokenCounter().count_messages(p.messages)


def test_a_turn_without_a_reply_joins_the_next_user_message():
    hist = [HistoryTurn("0", "阿虚:「大家好」", "春日:「哼」"), HistoryTurn("0.1", "悟空:「俺老孙来也」", ""),
            HistoryTurn("1", "阿虚:「悟空好」", "")]
    p = pack("你是春日。", HEADER, [], hist, "悟空:「春日你好」", TiktokenCounter())
    assert [m.role for m in p.messages] == ["system", "user", "assistant", "user"]
    assert p.messages[-1].content == "悟空:「俺老孙来也」\n阿虚:「悟空好」\n悟空:「春日你好」"
    assert p.trace.total_tokens == TiktokenCounter().count_messages(p.messages)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    system=_part.filter(str.strip),
    memory=st.lists(st.tuples(_part.filter(str.strip), st.sampled_from(["fact", "summary", "recalled"]),
                              st.integers(0, 5)), max_size=6),
    memory_header=_part,
    lore=st.lists(_part.filter(str.strip), max_size=3),
    scenes=st.lists(_part.filter(str.strip), max_size=5),
    history=st.lists(st.tuples(_part, _part), max_size=5),
    query=_part.filter(str.strip),
    window=st.integers(80, 3000),
    layout=st.sampled_from(["system", "stable_prefix", "stable_story"]),
)
def test_trace_total_is_the_exact_count_with_memory(system, memory, memory_header, lore, scenes, history, query,
                                                    window, layout):
    counter = TiktokenCounter()
    budget = Budget(window, 20, 300, 300, 150, 200)
    try:
        p = pack(system, HEADER, [SceneUnit(str(i), s) for i, s in enumerate(scenes)],
                 [HistoryTurn(str(i), u, a) for i, (u, a) in enumerate(history)], query, counter, budget,
                 lore=[LoreUnit(f"l{i}", t) for i, t in enumerate(lore)], lore_header="设定：",
                 memory=[MemoryUnit(f"m{i}", t, k, (str(n),)) for i, (t, k, n) in enumerate(memory)],
                 memory_header=memory_header, layout=layout)
    except BudgetError as exc:
        assert exc.part in {"query", "system_prompt"}
        return
    exact = counter.count_messages(p.messages)
    assert p.trace.total_tokens == exact <= budget.prompt_tokens
    assert sum(p.trace.parts.values()) == exact
    assert p.trace.parts.get("memory", 0) <= p.trace.memory_budget
    window_ids = {t.id for t in p.trace.turns if t.included}
    turn_of = {f"m{i}": str(n) for i, (_, _, n) in enumerate(memory)}
    assert not any(part.included and turn_of[part.id] in window_ids for part in p.trace.memory)
