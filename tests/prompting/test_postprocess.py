"""Post-processing keeps the character's own words, whole or streamed in any chunking."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatharuhi.prompting.postprocess import ReplyFilter, clean_reply

OWN, OTHERS, SKIP = ["春日", "凉宫春日", "Holmes"], ["阿虚", "Watson"], ["旁白"]

CASES = [
    ("春日:「好啊！我们明天就出发！」", "好啊！我们明天就出发！", False),
    ("春日：「无聊死了」(趴在桌上)\n阿虚:「那就回家吧」\n春日:「不要」", "无聊死了(趴在桌上)", True),
    ("「直接说」", "直接说", False),
    ("春日:「第一行」\n\n\n春日:「第二行」", "第一行\n\n第二行", False),
    ("注意：这不是说话人标签的句子", "注意：这不是说话人标签的句子", False),
    ("旁白:春日站起来\n春日:「走！」", "走！", False),
    ("Holmes:「Elementary.」\nWatson:「Indeed.」", "Elementary.", True),
    ("阿虚:「我替你说」", "阿虚:「我替你说」", False),  # a reply that opens as someone else is kept, not emptied
    ("春日:「好」\n古泉:「我也来」", "好", True),  # any bracketed speaker ends the reply
    ("  \n春日:「前面有空行」  ", "前面有空行", False),
    # real replies of small models (issue 13): another speaker after the answer, meta-commentary
    ("春日:「明天九点，站前集合！」\nMom:👌👍", "明天九点，站前集合！", True),
    ("Holmes:「You have been in Afghanistan, I perceive.」\nMom:👌👍\nHolmes:「Quite.」",
     "You have been in Afghanistan, I perceive.", True),
    ("Holmes:「The game is afoot.」\n\nHere's what's changed since the original scene: Holmes is calmer.",
     "The game is afoot.", True),
    ("Here's the revised reply:\nHolmes:「Data, data, data!」", "Data, data, data!", False),
    ("春日:「走吧！」\n（注：春日的语气更加强硬了）", "走吧！", True),
    ("以下是春日的回答：\n春日:「无聊！」", "无聊！", False),
    ("春日:「好」\n妈妈：早点回家", "好", True),
    ("Holmes:「Here's the thing, Watson: nobody saw it.」", "Here's the thing, Watson: nobody saw it.", False),
    ("（笑）好啊", "（笑）好啊", False),
]


@pytest.mark.parametrize("raw, expected, stopped", CASES)
def test_clean_reply(raw, expected, stopped):
    f = ReplyFilter(OWN, OTHERS, SKIP)
    f.feed(raw)
    f.finish()
    assert f.text == expected
    assert f.stopped == stopped


@settings(max_examples=60, deadline=None)
@given(case=st.sampled_from(CASES), cuts=st.lists(st.integers(1, 6), min_size=1, max_size=40))
def test_streaming_equals_whole_for_any_chunking(case, cuts):
    raw, expected, _ = case
    f, out, pos, i = ReplyFilter(OWN, OTHERS, SKIP), [], 0, 0
    while pos < len(raw) and not f.stopped:
        step = cuts[i % len(cuts)]
        out.append(f.feed(raw[pos : pos + step]))
        pos, i = pos + step, i + 1
    out.append(f.finish())
    assert "".join(out) == expected == clean_reply(raw, OWN, OTHERS, SKIP)


def test_nothing_is_emitted_before_the_speaker_tag_is_decided():
    f = ReplyFilter(OWN, OTHERS)
    assert f.feed("阿") == "" and f.feed("虚") == ""
    assert f.feed(":「") == "" and f.stopped is False  # first line: held until the line ends


def test_a_possible_meta_line_is_held_until_decided():
    f = ReplyFilter(OWN, OTHERS)
    assert f.feed("Holmes:「Quite.」\nHere's wh") == "Quite."
    assert f.feed("at's changed: more") == "" and f.stopped
    g = ReplyFilter(OWN, OTHERS)
    assert g.feed("（笑）好啊，") == "（笑）好啊，"  # not the start of any meta opener: streamed at once


def test_untagged_text_streams_without_waiting_for_a_long_line():
    f = ReplyFilter(OWN, OTHERS)
    assert f.feed("好啊，") == "好啊，"  # punctuation before any colon: not a speaker tag
    g = ReplyFilter(OWN, OTHERS)
    out = g.feed("Well then let us go at once and see what")
    assert out.startswith("Well then")  # longer than any tag: emitted at once


def _streamed(raw: str, own, others) -> tuple[list[str], ReplyFilter]:
    f = ReplyFilter(own, others)
    shown = [f.feed(c) for c in raw] + [f.finish()]
    return shown, f


def test_a_known_speaker_starting_in_mid_line_ends_the_reply_and_is_never_shown():
    raw = "A lady's got it right. She was so beautiful. Lestrade:It is indeed the lady of the house."
    shown, f = _streamed(raw, ["Holmes"], ["Lestrade", "Watson"])
    assert f.text == "A lady's got it right. She was so beautiful." and f.stopped
    assert "Lestr" not in "".join(shown)  # held back while it could still become the tag, then dropped
    assert clean_reply("Holmes:「Quite so.」 Watson：「Indeed.」", ["Holmes"], ["Watson"]) == "Quite so."


def test_a_name_in_mid_line_that_is_not_a_tag_stays():
    for raw in ("I met Lestrade: he was late.", "Ask Lestrade, he knows.", "Note: Lestrade is late.",
                "Elementary. Lestrade said so."):
        shown, f = _streamed(raw, ["Holmes"], ["Lestrade"])
        assert f.text == raw and not f.stopped and "".join(shown) == raw
