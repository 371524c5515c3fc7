"""The backend contract (backends/base.py): one method to write; what the rest reads is declared, with defaults."""

from __future__ import annotations

import asyncio
import inspect

from chatharuhi import ChatHaruhi
from chatharuhi.backends.base import Backend, StreamInfo
from chatharuhi.backends.openai_compat import OpenAIBackend
from chatharuhi.backends.scripted import ScriptedBackend

MESSAGES = [{"role": "user", "content": "hi"}]


class Plain(Backend):
    """A third-party backend written to the one-method contract, with no ``info``."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def stream(self, messages, **options):
        self.seen.append(dict(options))
        yield "Holmes:「Quite so.」"


class Reporting(Backend):
    """A backend that knows how its replies end."""

    def stream(self, messages, *, info=None, **options):
        yield "Holmes:「Elementary.」"
        if info is not None:
            info.finish_reason, info.usage = "length", {"completion_tokens": 3}


def test_a_backend_without_info_is_never_handed_one_sync_or_async():
    backend = Plain()
    assert "".join(backend.stream(MESSAGES, info=StreamInfo(), max_tokens=4)) == "Holmes:「Quite so.」"
    assert asyncio.run(backend.acomplete(MESSAGES, temperature=0.5)) == "Holmes:「Quite so.」"
    assert backend.seen == [{"max_tokens": 4}, {"temperature": 0.5}]


def test_a_chatbot_on_a_plain_backend_replies_and_reports_a_stop():
    bot = ChatHaruhi(role="sherlock", llm=Plain(), embedder="hash", top_k=0)
    reply = bot.stream("Who are you?")
    assert reply.text() == "Quite so." and reply.finish_reason == "stop" and reply.usage is None
    assert reply.first_chunk_ms is not None and reply.first_chunk_ms >= 0


def test_what_a_backend_reports_reaches_the_reply_on_both_paths():
    bot = ChatHaruhi(role="sherlock", llm=Reporting(), embedder="hash", top_k=0)
    reply = bot.stream("Who are you?")
    assert reply.text() == "Elementary." and reply.finish_reason == "length"
    assert reply.usage == {"completion_tokens": 3}

    async def streamed():
        reply = bot.astream("And now?")
        return "".join([c async for c in reply]), reply.finish_reason

    assert asyncio.run(streamed()) == ("Elementary.", "length")


def test_everything_read_off_a_backend_is_declared_on_the_base_with_a_default():
    plain = Plain()
    declared = {"name": "backend", "temperature": None, "seed": None, "base_url": None, "closed": False,
                "model_entry": None, "budget_hint": {}, "supports_prefill": False, "transcript": False,
                "prompt_layout": "system", "call_options": None}
    assert {k: getattr(plain, k) for k in declared} == declared
    assert plain.describe() == "backend"


def test_the_one_call_takes_info_and_no_twin_remains():
    for cls in (Backend, OpenAIBackend):
        assert "info" in inspect.signature(cls.stream).parameters
    for cls in (Backend, OpenAIBackend, ScriptedBackend):
        assert not any(name.endswith("_with_info") for name in dir(cls))


def test_describe_names_the_model_and_where_it_runs():
    backend = OpenAIBackend(base_url="http://127.0.0.1:9/v1", api_key="k", model="gpt-test")
    assert backend.describe() == "gpt-test via http://127.0.0.1:9/v1"
    assert ScriptedBackend(["x"]).describe() == "scripted"


def test_the_docs_example_backend_runs_a_chat():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "backends.md").read_text(encoding="utf-8")
    section = page.split("## Writing a backend", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(code, "docs/backends.md", "exec"), scope)
    bot = ChatHaruhi(role="sherlock", llm=scope["Echo"](), embedder="hash", top_k=0)
    reply = bot.stream("The game is afoot.")
    assert "The game is afoot." in reply.text() and reply.finish_reason == "stop"
