"""The "Why this reply" panel says whether the story was kept and what the model had cached.

“为什么这样回复”面板：说明故事是否沿用上一轮，以及模型缓存了多少提示词。
"""

from __future__ import annotations

from chatharuhi.web_trace import cache_sentence, trace_view

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
