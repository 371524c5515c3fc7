"""LangChain adapters, through langchain-core's own interfaces (no network)."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core")

from langchain_core.messages import AIMessage, HumanMessage  # noqa: E402
from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402

from chatharuhi import ChatHaruhi  # noqa: E402
from chatharuhi.backends.scripted import ScriptedBackend  # noqa: E402
from chatharuhi.integrations.langchain import ChatHaruhiChatModel, SceneRetriever  # noqa: E402


def make_bot(replies=("春日:「外星人就在这附近！」",)):
    return ChatHaruhi("haruhi", llm=ScriptedBackend(list(replies), chunk_size=2), embedder="hash")


def test_retriever_returns_documents_with_scene_metadata():
    bot = make_bot()
    docs = SceneRetriever(bot=bot, k=3).invoke("外星人")
    assert len(docs) == 3
    assert {d.metadata["scene_id"] for d in docs} <= {s.id for s in bot.character.scenes}
    assert all(d.metadata["character"] == "haruhi" and d.page_content for d in docs)


def test_chat_model_invoke_stream_and_lcel():
    bot = make_bot()
    model = ChatHaruhiChatModel(bot=bot)
    reply = model.invoke([HumanMessage("我们去找外星人吧", name="阿虚")])
    assert reply.content == "外星人就在这附近！"
    chunks = list(model.stream([HumanMessage("早"), AIMessage("哼"), HumanMessage("去哪？")]))
    assert len(chunks) > 1 and "".join(c.content for c in chunks) == "外星人就在这附近！"
    sent = bot.backend.calls[-1]
    assert [m.role for m in sent] == ["system", "user", "assistant", "user"]
    assert bot.history == []  # stateless: the messages are the conversation
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model | StrOutputParser()
    assert chain.invoke({"q": "你好"}) == "外星人就在这附近！"


def test_consecutive_human_messages_and_a_leading_greeting_are_kept():
    bot = make_bot()
    model = ChatHaruhiChatModel(bot=bot)
    model.invoke([AIMessage("欢迎来到SOS团！"), HumanMessage("第一句"), HumanMessage("第二句"),
                  AIMessage("哼"), HumanMessage("去哪？")])
    sent = [m.content for m in bot.backend.calls[-1][1:]]
    assert sent == ["阿虚:「」", "春日:「欢迎来到SOS团！」", "阿虚:「第一句\n第二句」", "春日:「哼」",
                    "阿虚:「去哪？」"]


def test_message_handling_is_the_servers():
    """One reader for both surfaces: the same conversation gives the same turns, query and name."""
    from langchain_core.messages import SystemMessage

    from chatharuhi.chat.conversation import read_conversation
    from chatharuhi.integrations.langchain import split_messages
    from chatharuhi.server.api import ChatRequest

    lc = [SystemMessage("你是助手"), AIMessage("欢迎！"), HumanMessage("古泉:「一」"), HumanMessage("二", name="长门"),
          AIMessage("春日:「好」"), HumanMessage("三", name="朝比奈")]
    wire = ChatRequest.model_validate({"model": "haruhi", "messages": [
        {"role": "system", "content": "你是助手"}, {"role": "assistant", "content": "欢迎！"},
        {"role": "user", "content": "古泉:「一」"}, {"role": "user", "content": "二", "name": "长门"},
        {"role": "assistant", "content": "春日:「好」"}, {"role": "user", "content": "三", "name": "朝比奈"}]})
    assert split_messages(lc, "阿虚") == read_conversation(wire.conversation(), "阿虚")
    assert split_messages(lc, "阿虚")[2] == "朝比奈"


def test_usage_length_cut_and_standard_params_against_the_stub():
    from helpers.openai_stub import StubOpenAIServer

    with StubOpenAIServer("春日:「" + "外星人" * 20 + "」") as stub:
        model = ChatHaruhiChatModel(character="haruhi", llm="openai", base_url=stub.base_url, embedder="hash",
                                    max_retries=0, max_tokens=8)
        reply = model.invoke([HumanMessage("你好")])
        assert reply.response_metadata["finish_reason"] == "length"
        assert reply.usage_metadata["output_tokens"] == 8 and reply.usage_metadata["input_tokens"] > 0
        chunks = list(model.stream([HumanMessage("你好")]))
        assert chunks[-1].response_metadata["finish_reason"] == "length"
        assert sum(c.usage_metadata["output_tokens"] for c in chunks if c.usage_metadata) == 8
    params = model._get_ls_params()
    assert (params["ls_provider"], params["ls_model_name"], params["ls_max_tokens"]) == ("chatharuhi", "haruhi", 8)


def test_usage_falls_back_to_our_count_and_stop_adds_to_the_characters():
    bot = make_bot()
    reply = ChatHaruhiChatModel(bot=bot).invoke([HumanMessage("你好")], stop=["。"])
    assert reply.response_metadata["usage_source"] == "estimate"
    assert reply.usage_metadata["input_tokens"] == bot.counter.count_messages(bot.backend.calls[-1])
    assert reply.usage_metadata["output_tokens"] == bot.counter.count("外星人就在这附近！")
    with pytest.raises(Exception, match="unknown option 'tools'"):
        ChatHaruhiChatModel(bot=bot).invoke([HumanMessage("你好")], tools=[])


def test_retriever_k_per_call():
    bot = make_bot()
    retriever = SceneRetriever(bot=bot, k=4)
    assert len(retriever.invoke("外星人", k=1)) == 1 and len(retriever.invoke("外星人")) == 4


def test_with_a_bot_the_standard_parameters_apply_per_call_and_one_that_cannot_is_named():
    """Issue 21 §8: ``ChatHaruhiChatModel(bot=..., timeout=60, ...)`` was refused."""
    from chatharuhi.backends.openai_compat import OpenAIBackend
    from chatharuhi.errors import BackendTimeout
    from helpers.openai_stub import StubOpenAIServer

    with StubOpenAIServer("春日:「好！」") as stub:
        backend = OpenAIBackend(base_url=stub.base_url, api_key="bot-key", timeout=60, max_retries=0)
        bot = ChatHaruhi("haruhi", llm=backend, embedder="hash")
        model = ChatHaruhiChatModel(bot=bot, temperature=0, max_tokens=100, timeout=60, stop=[], max_retries=0,
                                    api_key="call-key")
        assert model.invoke([HumanMessage("你好")]).content == "好！"
        assert stub.requests[-1].headers["authorization"] == "Bearer call-key"  # this model's key, per call
        stub.mode, stub.delay = "slow", 30.0
        with pytest.raises(BackendTimeout, match="within 0.5 s"):  # this model's timeout, not the bot's 60 s
            ChatHaruhiChatModel(bot=bot, timeout=0.5, max_retries=0).invoke([HumanMessage("你好")])
    scripted = make_bot()
    with pytest.raises(ValueError, match="timeout= cannot apply to this bot: its scripted backend"):  # pydantic's
        ChatHaruhiChatModel(bot=scripted, timeout=60)
    with pytest.raises(ValueError, match="base_url= makes another bot"):
        ChatHaruhiChatModel(bot=scripted, base_url="http://127.0.0.1:9/v1")
