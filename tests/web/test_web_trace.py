"""The "Why this reply" panel says whether the story was kept and what the model had cached.

“为什么这样回复”面板：说明故事是否沿用上一轮，以及模型缓存了多少提示词。
"""

from __future__ import annotations

from chatharuhi.web.trace import cache_sentence, trace_view

TRACE = {"total_tokens": 1800, "budget": 3800, "parts": {"story": 1400}, "story_budget": 1500, "story_fill": 0.93,
         "scenes": [{"id": "01_早餐.txt", "score": 0.9, "tokens": 300, "included": True}], "turns": []}


def test_a_kept_story_and_the_cached_tokens_are_said_in_one_sentence():
    said = cache_sentence({**TRACE, "story_kept": True, "reused_tokens": 1350})
    assert said == ("The story was kept from the previous turn; the model had 1350 of the 1800 prompt tokens "
                    "cached and read the other 450.")
    assert "1350 of the 1800" in trace_view({**TRACE, "story_kept": True, "reused_tokens": 1350}, None)["summary"]


def test_a_fresh_story_an_api_model_and_reuse_off():
    assert cache_sentence({**TRACE, "story_kept": False}) == "The story was chosen afresh for this message."
    assert cache_sentence({**TRACE, "reused_tokens": 0}).startswith("The model had 0 of the 1800")
    assert cache_sentence(TRACE) == ""  # an API model, reuse off: nothing to say
    assert "cached" not in trace_view(TRACE, None)["summary"]


def test_the_cached_count_is_out_of_what_the_model_read_and_never_negative():
    """A regenerated reply: the model had the whole prompt cached, and the prompt it read is the packed one
    plus the reply's start (``Holmes:「``); counting against the packed prompt alone gave "read the other -4"."""
    said = cache_sentence({**TRACE, "reused_tokens": 1803, "model_prompt_tokens": 1804})
    assert "1803 of the 1804 prompt tokens cached and read the other 1 (" in said
    packed = TRACE["total_tokens"]
    assert said.endswith(f"({packed} packed, plus {1804 - packed} of the reply's start it was given: "
                         "the speaker's tag).")


def test_counts_agree_with_their_nouns():
    one = trace_view({**TRACE, "turns": [{"id": "0", "included": True}]}, None)["summary"]
    assert "1 scene and 1 earlier turn went" in one
