"""Who speaks next in a group: addressed first, talkativeness, never twice in a row, at most N, seeded."""

from __future__ import annotations

import pytest

from chatharuhi.chat.turn_order import Speaker, TurnOrder
from chatharuhi.errors import InputError, UnknownOption

HARUHI = Speaker("haruhi", ("haruhi", "凉宫春日", "春日", "Haruhi"), 0.5)
WUKONG = Speaker("wukong", ("wukong", "孙悟空", "悟空", "猴哥", "Monkey King"), 0.5)
SHERLOCK = Speaker("sherlock", ("sherlock", "Sherlock Holmes", "Holmes"), 0.5)


def order(*speakers, **kw):
    return TurnOrder(list(speakers or (HARUHI, WUKONG, SHERLOCK)), **kw)


def test_the_addressed_speak_first_in_the_order_they_are_named():
    o = order(seed=1)
    assert o.addressed("Holmes，猴哥和春日怎么看？") == ["sherlock", "wukong", "haruhi"]
    for r in range(20):
        assert o.plan("悟空，春日，你们好", r, last=None)[:2] == ["wukong", "haruhi"]


def test_latin_names_are_whole_words_in_any_case():
    o = order()
    assert o.addressed("sherlock? HARUHI!") == ["sherlock", "haruhi"]
    assert o.addressed("Holmesian methods") == []  # a name inside a word is not an address


def test_talkativeness_decides_who_joins_unasked():
    quiet = Speaker("wukong", WUKONG.names, 0.0)
    eager = Speaker("sherlock", SHERLOCK.names, 1.0)
    o = order(HARUHI, quiet, eager, seed=3, max_replies=3)
    for r in range(30):
        plan = o.plan("今天天气真好", r, last="haruhi")
        assert "sherlock" in plan and "wukong" not in plan and plan[0] != "haruhi"


def test_never_the_same_twice_in_a_row_unless_addressed():
    o = order(seed=5)
    for r in range(50):
        assert o.plan("大家觉得呢", r, last="haruhi")[0] != "haruhi"
    assert o.plan("春日，你再说一遍", 0, last="haruhi")[0] == "haruhi"


def test_when_nobody_would_speak_one_is_drawn():
    mute = [Speaker(s.name, s.names, 0.0) for s in (HARUHI, WUKONG)]
    o = order(*mute, seed=0)
    for r in range(10):
        plan = o.plan("嗯", r, last="haruhi")
        assert plan == ["wukong"]


def test_at_most_max_replies():
    o = order(seed=2, max_replies=2)
    assert len(o.plan("春日、悟空、Holmes，都来说说", 0, last=None)) == 2
    with pytest.raises(InputError, match="max_replies=0"):
        order(max_replies=0)


def test_the_same_seed_gives_the_same_speakers():
    def plans(seed):
        o = order(seed=seed, max_replies=3)
        return [o.plan("随便聊聊", r, last=None) for r in range(30)]

    assert plans(7) == plans(7)
    assert plans(7) != plans(8)


def test_muted_members_are_skipped_even_when_addressed():
    o = order(seed=1)
    for r in range(10):
        assert "wukong" not in o.plan("悟空你说", r, last=None, muted={"wukong"})
    with pytest.raises(InputError, match="every character in the group is muted"):
        o.plan("喂", 0, last=None, muted={"haruhi", "wukong", "sherlock"})


def test_list_and_manual_orders():
    o = order(order="list", max_replies=3)
    assert o.plan("大家好", 0, last="haruhi") == ["wukong", "sherlock", "haruhi"]
    manual = order(order="manual")
    assert manual.plan("Holmes?", 0, last=None) == ["sherlock"]
    with pytest.raises(InputError, match="turn order is manual: name who answers"):
        manual.plan("有人吗", 0, last=None)
    with pytest.raises(UnknownOption, match="did you mean 'natural'"):
        order(order="natual")


def test_whom_a_reply_addresses_speaks_next():
    o = order(max_replies=3)
    assert o.after("Holmes，你来推理一下", "haruhi", ["wukong"], 1) == ["sherlock", "wukong"]
    assert o.after("我自己来说，春日说的", "haruhi", ["haruhi", "wukong"], 1) == ["wukong"]  # not twice in a row
    assert o.after("悟空？", "haruhi", ["sherlock"], 2) == ["wukong"]  # cut to what max_replies leaves
    assert o.after("悟空？", "haruhi", [], 1, muted={"wukong"}) == []
