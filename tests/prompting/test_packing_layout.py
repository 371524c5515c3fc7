"""The "stable_prefix" layout: scenes and lore in the last user message, so system prompt + history repeat."""

from __future__ import annotations

import pytest

from chatharuhi.errors import InputError
from chatharuhi.prompting.packing import Budget, HistoryTurn, LoreUnit, SceneUnit, pack
from chatharuhi.prompting.tokens import CharCounter, TiktokenCounter

SYSTEM = "你是凉宫春日。"
HEADER = "以下是春日的经典桥段："


def scenes(*texts):
    return [SceneUnit(f"s{i}", t, 1.0 - i / 10) for i, t in enumerate(texts)]


def history(n):
    return [HistoryTurn(f"t{i}", f"阿虚:「第{i}句」", f"春日:「回答{i}」") for i in range(n)]


@pytest.mark.parametrize("counter", [CharCounter(), TiktokenCounter()], ids=["chars", "tiktoken"])
def test_scenes_go_before_the_query_and_the_count_is_exact(counter):
    packed = pack(SYSTEM, HEADER, scenes("春日:「无聊」", "阿虚:「哦」"), history(2), "阿虚:「去哪」", counter,
                  Budget(context_window=400, reply_reserve=50, story_tokens=100, history_tokens=100),
                  layout="stable_prefix")
    m = packed.messages
    assert m[0].role == "system" and m[0].content == SYSTEM
    assert [x.role for x in m[1:5]] == ["user", "assistant", "user", "assistant"]
    assert m[-1].content == f"{HEADER}\n春日:「无聊」\n阿虚:「哦」\n\n阿虚:「去哪」"
    assert packed.trace.total_tokens == counter.count_messages(m)
    assert packed.trace.included_scenes == ["s0", "s1"]


def test_consecutive_turns_share_system_prompt_and_history_as_a_prefix():
    counter = CharCounter()
    budget = Budget(context_window=400, reply_reserve=50, story_tokens=100, history_tokens=100)
    one = pack(SYSTEM, HEADER, scenes("春日:「无聊」"), history(2), "阿虚:「去哪」", counter, budget,
               layout="stable_prefix")
    two = pack(SYSTEM, HEADER, scenes("长门:「……」", "古泉:「有趣」"), history(3), "阿虚:「然后呢」", counter, budget,
               layout="stable_prefix")
    assert two.messages[:len(one.messages) - 1] == one.messages[:-1]  # only the new turn and the last message differ


def test_lore_moves_with_the_scenes_and_overflow_is_dropped_after_the_exact_count():
    counter = CharCounter()
    lore = [LoreUnit("l0", "SOS团：春日创立的社团", 0, "SOS")]
    packed = pack(SYSTEM, HEADER, scenes("春日:「" + "啊" * 60 + "」", "阿虚:「哦」"), history(1), "阿虚:「SOS」",
                  counter, Budget(context_window=150, reply_reserve=20, story_tokens=80, history_tokens=30,
                                  lore_tokens=30), lore=lore, lore_header="设定：", layout="stable_prefix")
    assert packed.messages[0].content == SYSTEM
    assert "SOS团" in packed.messages[-1].content and packed.messages[-1].content.endswith("阿虚:「SOS」")
    assert packed.trace.total_tokens == counter.count_messages(packed.messages) <= 130


def test_an_unknown_layout_is_refused():
    with pytest.raises(InputError, match="stable_prefix"):
        pack(SYSTEM, HEADER, [], [], "hi", CharCounter(), layout="stable")
