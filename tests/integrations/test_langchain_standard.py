"""langchain-tests' own standard suites (unit and integration) run against our chat model and retriever,
offline: the chat model's backend is the OpenAI backend talking to ``StubOpenAIServer``.

Tests the suites skip for capabilities a character model declares it does not have (tool calling,
structured output, images, audio, PDFs) are skips by the suite's own design; ``conftest.py`` lets those
(and only those) through under ``CHATHARUHI_REQUIRE_ALL=1``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import ChatModelIntegrationTests, RetrieversIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import ChatModelUnitTests  # noqa: E402

from chatharuhi import ChatHaruhi  # noqa: E402
from chatharuhi.integrations.langchain import ChatHaruhiChatModel, SceneRetriever  # noqa: E402
from helpers.openai_stub import StubOpenAIServer  # noqa: E402

pytestmark = pytest.mark.standard_suite


def _reply(body: dict) -> str:
    """The stub answers in Haruhi's format; it says a stop word the suite's stop test looks for."""
    return "春日:「外星人就在这附近！SOS团出发！」"


@pytest.fixture(scope="module")
def upstream():
    with StubOpenAIServer(_reply, chunk_size=3) as stub:
        yield stub


@pytest.fixture(autouse=True)
def _stub_url(request, upstream):
    cls = request.cls
    if cls is not None and hasattr(cls, "base_url"):
        cls.base_url = upstream.base_url
    yield


class _Params:
    base_url = ""

    @property
    def chat_model_class(self) -> type[ChatHaruhiChatModel]:
        return ChatHaruhiChatModel

    @property
    def chat_model_params(self) -> dict:
        return {"character": "haruhi", "llm": "openai", "model": "gpt-4o-mini", "base_url": self.base_url or
                "http://127.0.0.1:9/v1", "embedder": "hash"}

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return "sherlock"  # the model is the character: another one per call

    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False


class TestChatHaruhiUnit(_Params, ChatModelUnitTests):
    pass


class TestChatHaruhiIntegration(_Params, ChatModelIntegrationTests):
    pass


class _BotParams(_Params):
    """The other form: a model built around a ready bot, given LangChain's standard parameters too."""

    @property
    def chat_model_params(self) -> dict:
        from chatharuhi.backends.openai_compat import OpenAIBackend

        backend = OpenAIBackend(model="gpt-4o-mini", base_url=self.base_url or "http://127.0.0.1:9/v1", api_key="k")
        return {"bot": ChatHaruhi("haruhi", llm=backend, embedder="hash")}


class TestChatHaruhiBotUnit(_BotParams, ChatModelUnitTests):
    pass


class TestSceneRetriever(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[SceneRetriever]:
        return SceneRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"bot": ChatHaruhi("haruhi", llm="scripted", embedder="hash"), "k": 2}

    @property
    def retriever_query_example(self) -> str:
        return "我们去找外星人吧"
