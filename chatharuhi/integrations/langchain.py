"""LangChain adapters (the ``[langchain]`` extra): a retriever over a character's scenes and a chat
model that runs a character's whole pipeline, so a character can sit in an LCEL chain or an agent.

    from chatharuhi.integrations.langchain import ChatHaruhiChatModel, SceneRetriever
    model = ChatHaruhiChatModel(bot=ChatHaruhi("haruhi"))
    model.invoke([HumanMessage("我们去找外星人吧")])
"""

from __future__ import annotations

from typing import Any, Iterator

try:
    from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
    from langchain_core.retrievers import BaseRetriever
except ImportError as exc:  # pragma: no cover - depends on the extra
    from ..errors import BackendUnavailable

    raise BackendUnavailable("the LangChain adapters need langchain-core: pip install 'chatharuhi[langchain]'") from exc

from ..types import Turn


class SceneRetriever(BaseRetriever):
    """A character's nearest scenes as ``Document``s (metadata: scene id, score, character, speakers)."""

    bot: Any  # a ChatHaruhi; its index, embedder and weights are used
    k: int = 4

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        hits = self.bot.index.search(query, self.k, **self.bot.weights)
        name = self.bot.character.name
        return [Document(page_content=h.scene.text, id=h.scene.id,
                         metadata={"scene_id": h.scene.id, "score": h.score, "dense": h.dense, "lexical": h.lexical,
                                   "character": name, "speakers": sorted(h.scene.speakers())})
                for h in hits]


def _split(messages: list[BaseMessage], default_role: str) -> tuple[str, list[Turn], str]:
    """The last human message, the earlier human/AI pairs as turns, and the user's role name."""
    if not messages or not isinstance(messages[-1], HumanMessage):
        from ..errors import InputError

        raise InputError("the last message must be a HumanMessage: what the user says to the character")
    turns, pending = [], None
    for m in messages[:-1]:
        if isinstance(m, SystemMessage):
            continue  # the character's own system prompt is used
        if isinstance(m, HumanMessage):
            pending = m
        elif isinstance(m, AIMessage) and pending is not None:
            turns.append(Turn(pending.name or default_role, str(pending.content), str(m.content)))
            pending = None
    last = messages[-1]
    return str(last.content), turns, last.name or default_role


class ChatHaruhiChatModel(BaseChatModel):
    """A ``BaseChatModel`` that answers as a character: retrieval, packing, the backend, the reply filter.

    The conversation comes from the messages (stateless: the bot's own history is not touched); a
    ``HumanMessage`` ``name`` is used as the user's role."""

    bot: Any

    @property
    def _llm_type(self) -> str:
        return "chatharuhi"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"character": self.bot.character.name, "backend": getattr(self.bot.backend, "name", "")}

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        text = "".join(c.message.content for c in self._stream(messages, stop, run_manager, **kwargs))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        text, history, role = _split(messages, self.bot.user_role)
        options = dict(kwargs)
        if stop:
            options["stop"] = list(stop)
        for piece in self.bot.stream(text, role, history=history, **options):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
