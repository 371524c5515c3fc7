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
