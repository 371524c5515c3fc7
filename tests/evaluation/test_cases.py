"""The evaluation case builder, on real fixture characters and hand-made scenes."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatharuhi.character.folder import Character, load_character, parse_scene
from chatharuhi.errors import InputError
from chatharuhi.evaluation.cases import build_cases, require_cases
from chatharuhi.types import Turn


def test_counts_on_the_haruhi_fixture_are_pinned(fixtures_dir):
    haruhi = load_character(fixtures_dir / "haruhi")
    assert haruhi.speaker == "春日"
    everything = build_cases(haruhi)  # ChatHaruhi's 名字:(动作)「台词」 lines count as speech
    assert (everything.usable_scenes, everything.candidates, len(everything.cases)) == (138, 283, 138)
    assert len({c.scene_id for c in everything.cases}) == 138  # at most one case per scene
    drawn = build_cases(haruhi, 30, seed=0)
    assert len(drawn.cases) == 30
    assert [c.id for c in drawn.cases] == [c.id for c in build_cases(haruhi, 30, seed=0).cases]  # deterministic
    assert [c.id for c in drawn.cases] != [c.id for c in build_cases(haruhi, 30, seed=1).cases]
    assert {c.id for c in drawn.cases} <= {c.id for c in everything.cases}  # n only draws scenes
    for case in drawn.cases:
        assert case.query_role != "春日" and len(case.answer) >= 8 and case.language == "zh"


def test_counts_on_the_sheldon_fixture_are_pinned(fixtures_dir):
    sheldon = load_character(fixtures_dir / "Sheldon")
    cs = build_cases(sheldon)
    assert (cs.usable_scenes, cs.candidates) == (261, 1095)
    assert all(c.language == "en" and len(c.answer.split()) >= 5 for c in cs.cases)


def test_history_turns_from_the_lines_before_the_query():
    scene = parse_scene("s1", "\n".join([
        "旁白:放学后的活动室",
        "春日:「大家都到齐了吗」",  # the character speaks first: no user line to pair it with
        "阿虚:「到齐了」",
        "春日:「很好」",
        "春日:「今天我们开会」",  # the character twice in a row: one reply
        "古泉:「议题是什么」",
        "阿虚:「我猜又是外星人」",
        "春日:「没错」",
        "阿虚:「果然如此」",
        "春日:「我们今天就要去找外星人、未来人和超能力者！」",
    ]))
    character = Character("haruhi", Path("."), "你是春日", [scene])
    (case,) = build_cases(character).cases
    assert (case.query_role, case.query) == ("阿虚", "果然如此")
    assert case.answer == "我们今天就要去找外星人、未来人和超能力者！"
    assert case.history == (Turn("阿虚", "到齐了", "很好今天我们开会"), Turn("阿虚", "我猜又是外星人", "没错"))
    assert case.dropped_lines == 3  # narration, the opening line, 古泉's line
    assert case.transcript.startswith("旁白:放学后的活动室\n春日:「大家都到齐了吗」")
    assert case.transcript.endswith("春日:「没错」")
    assert case.id == "s1#10" and case.scene_id == "s1"


def test_too_few_usable_cases_is_a_clear_message():
    scene = parse_scene("s1", "阿虚:「你好」\n春日:「短」\n阿虚:「再见」\n春日:「我们今天就要去找外星人！」")
    character = Character("tiny", Path("."), "你是春日", [scene])
    cs = build_cases(character)
    assert len(cs.cases) == 1
    with pytest.raises(InputError, match=r"tiny: only 1 usable test case.*need at least 3.*'春日'.*8 CJK"):
        require_cases(cs, character)
