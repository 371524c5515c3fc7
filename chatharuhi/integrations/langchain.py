"""LangChain adapters (the ``[langchain]`` extra): a retriever over a character's scenes and a chat
model that runs a character's whole pipeline, so a character can sit in an LCEL chain or an agent.

    from chatharuhi.integrations.langchain import ChatHaruhiChatModel, SceneRetriever
    model = ChatHaruhiChatModel(bot=Chatbot("haruhi"))          # or, built here:
    model = ChatHaruhiChatModel(character="haruhi", llm="openai", base_url="http://localhost:8000/v1")
    model.invoke([HumanMessage("我们去找外星人吧")])

Both pass langchain-tests' standard suites (tests/integrations/test_langchain_standard.py). Messages are read by
``chatharuhi.chat.conversation.read_conversation``, exactly as the HTTP server reads them.
"""

from __future__ import annotations

from typing import Any, Iterator

try:
    from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.language_models.chat_models import BaseChatModel, LangSmithParams
    from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
    from langchain_core.retrievers import BaseRetriever
    from pydantic import Field, PrivateAttr, SecretStr, model_validator
except ImportError as exc:  # pragma: no cover - depends on the extra
    from ..errors import BackendUnavailable

    raise BackendUnavailable("the LangChain adapters need langchain-core: pip install 'chatharuhi[langchain]'") from exc

from ..chat.conversation import Incoming, read_conversation
from ..errors import InputError
from ..types import Turn

PER_CALL = ("timeout", "max_retries", "api_key")  # LangChain's standard request parameters, applied per call with bot=
_ROLES = {"human": "user", "ai": "assistant", "system": "system", "developer": "developer", "tool": "tool",
          "function": "function"}


class SceneRetriever(BaseRetriever):
    """A character's nearest scenes as ``Document``s (metadata: scene id, score, character, speakers).

    ``k`` (here or per call, ``invoke(query, k=2)``) is how many scenes come back."""

    bot: Any  # a ChatHaruhi; its index, embedder and weights are used
    k: int = 4

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                k: int | None = None) -> list[Document]:
        k = self.k if k is None else k
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise InputError(f"k must be a whole number of scenes (0 or more), not {k!r}")
        hits = self.bot.index.search(query, k, **self.bot.weights)[:k]
        name = self.bot.character.name
        return [Document(page_content=h.scene.text, id=h.scene.id,
                         metadata={"scene_id": h.scene.id, "score": h.score, "dense": h.dense, "lexical": h.lexical,
                                   "character": name, "speakers": sorted(h.scene.speakers())})
                for h in hits]


def _incoming(messages: list[BaseMessage]) -> list[Incoming]:
    out = []
    for i, m in enumerate(messages):
        role = _ROLES.get(m.type)
        if role is None:
            raise InputError(f"messages[{i}] is a {type(m).__name__}; send HumanMessage/AIMessage/SystemMessage")
        text = m.content if isinstance(m.content, str) else m.text
        out.append(Incoming(role, text if isinstance(text, str) else str(text),
                            getattr(m, "name", None) if isinstance(m, HumanMessage) else None))
    return out


def split_messages(messages: list[BaseMessage], default_role: str) -> tuple[list[Turn], str, str | None]:
    """LangChain messages -> (history turns, the query, the query's in-story name), as the server reads them."""
    return read_conversation(_incoming(messages), default_role)


class ChatHaruhiChatModel(BaseChatModel):
    """A ``BaseChatModel`` that answers as a character: retrieval, packing, the backend, the reply filter.

    Give a ready ``bot=Chatbot(...)``, or ``character=`` plus backend settings (``llm``, ``model``,
    ``base_url``, ``api_key``, ``timeout``, ``max_retries``, ``embedder``) to have one built. The
    conversation comes from the messages (stateless: a bot's own history is not touched); a
    ``HumanMessage`` ``name`` is the user's in-story name. ``temperature``, ``max_tokens`` and ``stop``
    apply to every call (``stop`` adds to the character's own stops); a reply cut at ``max_tokens`` says
    ``finish_reason: "length"``; ``usage_metadata`` is the upstream's when it reports one, else our count.

    With ``bot=``, LangChain's other standard parameters (``timeout``, ``max_retries``, ``api_key``) apply to
    every call too, when the bot's backend takes them per call (the OpenAI-compatible one does); one its
    backend cannot honour is refused by name. The settings that would make another bot (``character``,
    ``llm``, ``model``, ``base_url``, ``embedder``) are refused with ``bot=``."""

    bot: Any = None
    character: str | None = None
    llm: str | None = None
    model: str | None = None  # the upstream model (the backend's ``model=``)
    base_url: str | None = None
    api_key: SecretStr | None = None
    timeout: float | None = None
    max_retries: int | None = None
    embedder: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    _others: dict[str, Any] = PrivateAttr(default_factory=dict)  # per-call ``model=`` characters

    model_config = {"populate_by_name": True, "arbitrary_types_allowed": True}

    @model_validator(mode="after")
    def _build_bot(self) -> "ChatHaruhiChatModel":
        settings = {"llm": self.llm, "model": self.model, "base_url": self.base_url, "timeout": self.timeout,
                    "max_retries": self.max_retries, "embedder": self.embedder,
                    "api_key": self.api_key.get_secret_value() if self.api_key is not None else None}
        given = {k: v for k, v in settings.items() if v is not None}
        if self.bot is not None:
            other = sorted({"character", *given} - set(PER_CALL) if self.character is not None else
                           set(given) - set(PER_CALL))
            if other:
                raise InputError(f"{other[0]}= makes another bot: pass either bot= or character= with backend "
                                 f"settings, not both (got bot= and {', '.join(other)})")
            takes = self.bot.backend.call_options
            for name in (k for k in PER_CALL if k in given):
                if takes is None or name not in takes:
                    raise InputError(f"{name}= cannot apply to this bot: its {self.bot.backend.name} "
                                     f"backend does not take {name} per call; leave it out, or give the backend "
                                     f"its own {name} when you build it")
            return self
        if not self.character:
            raise InputError("no character: pass bot=Chatbot(...) or character='haruhi'")
        from ..chat.chatbot import Chatbot

        embedder = given.pop("embedder", None)
        llm = given.pop("llm", None)
        self.bot = Chatbot(self.character, llm=llm, embedder=embedder, **given)
        return self

    @property
    def _llm_type(self) -> str:
        return "chatharuhi"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"character": self.bot.character.name, "backend": self.bot.backend.name,
                "temperature": self.temperature, "max_tokens": self.max_tokens}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(ls_provider="chatharuhi", ls_model_name=kwargs.get("model") or self.bot.character.name,
                                 ls_model_type="chat")
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        stops = stop or kwargs.get("stop") or self.stop
        if stops:
            params["ls_stop"] = list(stops)
        return params

    def _options(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(kwargs) - {"temperature", "max_tokens", "top_p", "model"})
        if unknown:
            raise InputError(f"unknown option {unknown[0]!r} for a character model; use temperature, max_tokens, "
                             "top_p or stop")
        options = {"temperature": self.temperature, "max_tokens": self.max_tokens, **kwargs}
        options.pop("model", None)  # a character name: chooses the bot (``_bot_for``), not a backend option
        if self.character is None:  # bot=: the standard request parameters apply per call (built bots have them)
            options.update(timeout=self.timeout, max_retries=self.max_retries,
                           api_key=self.api_key.get_secret_value() if self.api_key is not None else None)
        stops = [*(self.stop or []), *(stop or [])]
        if stops:
            options["stop"] = list(dict.fromkeys(stops))
        return {k: v for k, v in options.items() if v is not None}

    def _bot_for(self, model: str | None) -> Any:
        """The bot for a per-call ``model=`` (another character, as the server's ``model`` is), sharing this
        one's backend and embedder; this model's own bot without it."""
        if not model or model.strip().casefold() in {self.bot.character.name.casefold(),
                                                      self.bot.character.display_name.casefold()}:
            return self.bot
        key = model.strip().casefold()
        if key not in self._others:
            from ..chat.chatbot import Chatbot

            self._others[key] = Chatbot(model.strip(), llm=self.bot.backend, embedder=self.bot.embedder)
        return self._others[key]

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        chunks = list(self._stream(messages, stop, run_manager, **kwargs))
        last = chunks[-1].message
        text = "".join(c.message.content for c in chunks)
        message = AIMessage(content=text, usage_metadata=last.usage_metadata,
                            response_metadata=dict(last.response_metadata))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        bot = self._bot_for(kwargs.get("model"))
        history, text, name = split_messages(messages, bot.user_role)
        reply = bot.stream(text, name, history=history, **self._options(stop, kwargs))
        for piece in reply:
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        usage = reply.usage
        if usage is None:  # the backend reported none: our exact count of what was sent and received
            prompt, completion = reply.trace.total_tokens, bot.counter.count(reply.text())
            usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        meta = {"finish_reason": reply.finish_reason, "model_name": bot.character.name,
                "usage_source": "upstream" if reply.usage else "estimate"}
        yield ChatGenerationChunk(message=AIMessageChunk(
            content="", response_metadata=meta, chunk_position="last",
            usage_metadata={"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"],
                            "total_tokens": usage["total_tokens"]}))
