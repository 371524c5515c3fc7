"""``ChatHaruhi``: the core ``Chatbot`` plus ChatHaruhi 1.0.9's keywords, names, methods and reply format.

    k_search                 the number of scenes retrieved per turn (our ``top_k``), readable and assignable
    max_len_story, max_len_history, system_prompt   readable and assignable (the budget, the prompt)
    llm, db, embedding, tokenizer   the backend, the index, the embedder, a token counter (read only: assigning
                             these or ChatHaruhi's layout tokens is an InputError naming where that lives here)
    dialogue_history         [(query, response)] in ChatHaruhi's shape (``阿虚:「…」``, ``春日:「…」``);
                             assigning a list replaces the conversation
    generate_messages(text, role)   the messages a turn would send (no model call); remembers the query
    generate_prompt(text, role)     the same messages joined into one text
    append_response(response, last_query=None)   commit a reply produced elsewhere as a turn
    save_story_db(path)      the scenes and their vectors as a persisted Chroma folder (loadable with story_db=)
    reply_format             "plain" (our default: bare words) or "chatharuhi" (``春日:「…」`` from chat())
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from ..chat.chatbot import Chatbot
from ..config import DEFAULT_TOP_K
from ..errors import InputError, SessionError, UnknownOption
from ..types import Message, Turn
from .legacy import build_index, resolve_legacy, seed_story_vectors

if TYPE_CHECKING:
    from ..chat.reply import Plan

REPLY_FORMATS = ("plain", "chatharuhi")
# ChatHaruhi attributes that have no assignable equivalent here: assigning one is an error, not a no-op.
FIXED_ATTRIBUTES = {
    "llm": "the model is chosen when the chatbot is built: ChatHaruhi(..., llm='openai', model=...)",
    "db": "the scene index (bot.index) is built from the character: pass story_db=, story_text_folder= or db_type=",
    "embedding": "the embedder is chosen when the chatbot is built: ChatHaruhi(..., embedding='bge_zh')",
    "tokenizer": "tokens are counted with the backend's own tokenizer (bot.counter)",
    "narrator": "narrator names come from the character's manifest (narrators = [...] in character.toml)",
    "story_prefix_prompt": "the story header is the prompt template prompts/<language>/story_header.txt",
    "dialogue_divide_token": "scenes are laid out by the template prompts/<language>/scene.txt",
    "dialogue_bra_token": "lines are laid out by the template prompts/<language>/line.txt",
    "dialogue_ket_token": "lines are laid out by the template prompts/<language>/line.txt",
}
_TAGGED = re.compile(r"^\s*(?P<name>[^:：「」\n]{0,40}?)\s*[:：]\s*「(?P<text>.*)」\s*$", re.S)


def untag(line: str) -> tuple[str | None, str]:
    """``阿虚:「你好」`` -> ("阿虚", "你好"); anything else -> (None, the text)."""
    m = _TAGGED.match(line or "")
    return (m["name"].strip() or None, m["text"]) if m else (None, (line or "").strip())




def _same(name: str, value: Any, old_name: str, old_value: Any) -> Any:
    """One setting under two names (ours and ChatHaruhi's): either, or both when they agree."""
    if value is not None and old_value is not None and value != old_value:
        raise InputError(f"{name}={value!r} and {old_name}={old_value!r} set the same thing: pass one")
    return value if value is not None else old_value


class ChatHaruhi(Chatbot):
    """A role-play chatbot that speaks as one character, grounded in the character's scenes; ChatHaruhi's own
    keywords, names and methods work on it too (docs/chatharuhi-migration.md)."""

    def __init__(
        self,
        role: str | os.PathLike | None = None,
        llm: Any = None,
        embedder: Any = None,
        characters_dir: Any = None,
        *,
        character: Any = None,
        top_k: int = DEFAULT_TOP_K,
        story_tokens: int | None = None,
        history_tokens: int | None = None,
        vector_cache: Any = None,
        role_name: str | None = None,
        role_from_hf: str | None = None,
        system_prompt: str | os.PathLike | None = None,
        story_text_folder: str | os.PathLike | None = None,
        role_from_jsonl: str | os.PathLike | None = None,
        story_db: str | os.PathLike | None = None,
        max_len_story: int | None = None,
        max_len_history: int | None = None,
        k_search: int | None = None,
        verbose: bool = False,
        embedding: str | None = None,
        db_type: str | None = None,
        reply_format: str = "plain",
        strict_jsonl: bool = False,
        **options: Any,
    ):
        """ChatHaruhi's keywords are turned into the core's (``resolve_legacy``); ``options`` are the core
        ``Chatbot``'s keywords and the backend's, checked there (``UnknownOption``)."""
        story_tokens = _same("story_tokens", story_tokens, "max_len_story", max_len_story)
        history_tokens = _same("history_tokens", history_tokens, "max_len_history", max_len_history)
        searched = _same("top_k", top_k if top_k != DEFAULT_TOP_K else None, "k_search", k_search)
        top_k = top_k if searched is None else searched
        if reply_format not in REPLY_FORMATS:
            raise UnknownOption(reply_format, "reply_format=", REPLY_FORMATS, kind="value")
        self.reply_format, self.verbose = reply_format, verbose
        core = set(_core_keywords())
        llm_options = {k: v for k, v in options.items() if k not in core}
        legacy = resolve_legacy(
            role=role, character=character, characters_dir=characters_dir, llm=llm, llm_options=llm_options,
            embedder=embedder, role_name=role_name, role_from_hf=role_from_hf, role_from_jsonl=role_from_jsonl,
            system_prompt=system_prompt, story_text_folder=story_text_folder, story_db=story_db,
            embedding=embedding, db_type=db_type, strict_jsonl=strict_jsonl)

        def index(character: Any, embedder: Any) -> Any:
            seed_story_vectors(legacy, embedder)
            return build_index(legacy, character, embedder, vector_cache)

        super().__init__(role, legacy.llm, legacy.embedder, characters_dir, character=character or legacy.character,
                         index=index, top_k=top_k, story_tokens=story_tokens, history_tokens=history_tokens,
                         **{k: v for k, v in options.items() if k in core}, **legacy.llm_options)
        self._say(f"{self.character.name}: {len(self.index.scenes)} scenes, embedder {self.embedder.id}, "
                  f"backend {self.backend.name}")

    # -- attributes ------------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if name in FIXED_ATTRIBUTES:
            raise InputError(f"bot.{name} = ... is ChatHaruhi's and would change nothing here: "
                             f"{FIXED_ATTRIBUTES[name]}")
        super().__setattr__(name, value)

    @property
    def llm(self) -> Any:
        """The backend (ChatHaruhi's name)."""
        return self.backend

    @property
    def db(self) -> Any:
        """The scene index (ChatHaruhi's name)."""
        return self.index

    @property
    def embedding(self) -> Any:
        """The embedder (ChatHaruhi's name)."""
        return self.embedder

    def tokenizer(self, text: str) -> int:
        """Tokens in ``text`` by the backend's counter (ChatHaruhi's ``tokenizer(text)``)."""
        return self.counter.count(text)

    @property
    def system_prompt(self) -> str:
        """The system prompt as sent (persona and macros filled); assignable, as in ChatHaruhi."""
        return self.prompt.system_prompt

    @system_prompt.setter
    def system_prompt(self, value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise InputError("system_prompt must be non-empty text")
        self.prompt.system_prompt = value

    @property
    def max_len_story(self) -> int:
        """Tokens for retrieved scenes (ChatHaruhi's name for ``budget.story_tokens``); assignable."""
        return self.budget.story_tokens

    @max_len_story.setter
    def max_len_story(self, value: int) -> None:
        self._set_budget("story_tokens", value)

    @property
    def max_len_history(self) -> int:
        """Tokens for earlier turns (ChatHaruhi's name for ``budget.history_tokens``); assignable."""
        return self.budget.history_tokens

    @max_len_history.setter
    def max_len_history(self, value: int) -> None:
        self._set_budget("history_tokens", value)

    def _set_budget(self, field: str, value: int) -> None:
        from dataclasses import replace

        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InputError(f"{field} must be a whole number >= 0, got {value!r}")
        self.budget = replace(self.budget, **{field: value})

    @property
    def k_search(self) -> int:
        """Scenes retrieved per turn (ChatHaruhi's name for ``top_k``)."""
        return self.top_k

    @k_search.setter
    def k_search(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InputError(f"k_search must be a whole number >= 0, got {value!r}")
        self.top_k = value

    @property
    def dialogue_history(self) -> list[tuple[str, str]]:
        """The conversation as ChatHaruhi keeps it: (``用户:「…」``, ``春日:「…」``) pairs, oldest first."""
        line, speaker = self.prompt.line, self.character.speaker
        return [(line(t.user_role, t.text), line(speaker, t.reply)) for t in self.history]

    @dialogue_history.setter
    def dialogue_history(self, pairs: Iterable[tuple[str | None, str | None]]) -> None:
        turns = [self._turn_from_pair(i, pair) for i, pair in enumerate(list(pairs))]
        if self.sessions is not None:
            raise SessionError("dialogue_history cannot be replaced in a chatbot backed by a session store "
                               "(the stored turns would disagree); start one without session=/sessions=")
        self.dialogue.replace(turns)

    def _turn_from_pair(self, i: int, pair: Any) -> Turn:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InputError(f"dialogue_history[{i}] must be a (query, response) pair, got {pair!r}")
        query, response = pair
        if not all(isinstance(x, str) for x in pair):
            raise InputError(f"dialogue_history[{i}]: query and response must both be strings, got {pair!r} "
                             "(a one-sided memory with None is not supported here: leave the pair out, or put "
                             "that line into a scene)")
        role, text = untag(query or "")
        _, reply = untag(response or "")
        return Turn(role or self.user_role, text, reply)

    # -- methods ---------------------------------------------------------------------------------
    def generate_messages(self, text: str, role: str) -> list[Message]:
        """The messages a turn would send for ``text`` said by ``role`` (no model call)."""
        plan: Plan = self.prepare(text, role)
        self.last_query = self.prompt.line(plan.user_role, plan.text)
        self._last_plan = plan
        return plan.messages

    def generate_prompt(self, text: str, role: str) -> str:
        """``generate_messages`` as one text: each message's content and a newline, as ChatHaruhi joins them."""
        return "".join(m.content + "\n" for m in self.generate_messages(text, role))

    def append_response(self, response: str, last_query: str | None = None) -> None:
        """Record ``response`` (e.g. from your own model call) as the answer to the last generated query."""
        query = last_query if last_query is not None else getattr(self, "last_query", None)
        if query is None:
            raise InputError("append_response: no query to answer; call generate_messages(text, role) first "
                             "or pass last_query=")
        turn = self._turn_from_pair(len(self.history), (query, response))
        plan = getattr(self, "_last_plan", None)
        trace = plan.trace if plan is not None and query == self.last_query else None
        self.dialogue.commit(turn, trace.as_dict() if trace else None)
        if trace is not None:
            self.last_trace = trace

    def save_story_db(self, db_path: str | os.PathLike) -> Path:
        """Write the scenes and their vectors as a persisted Chroma folder (collection ``search``)."""
        from .sources import EMBEDDER_KEY, STORY_DB_COLLECTION

        try:
            import chromadb
        except ImportError:
            raise InputError("save_story_db needs chromadb: pip install 'chatharuhi[chroma]'") from None
        path = Path(db_path).expanduser()
        client = chromadb.PersistentClient(path=os.fspath(path))
        if STORY_DB_COLLECTION in [getattr(c, "name", c) for c in client.list_collections()]:
            client.delete_collection(STORY_DB_COLLECTION)
        collection = client.create_collection(STORY_DB_COLLECTION, embedding_function=None,
                                              metadata={EMBEDDER_KEY: self.embedder.id, "hnsw:space": "cosine"})
        scenes, vectors = self.index.scenes, self.index.vectors
        for start in range(0, len(scenes), 1000):
            part = slice(start, start + 1000)
            collection.add(ids=[s.id for s in scenes[part]], documents=[s.text for s in scenes[part]],
                           embeddings=[v.tolist() for v in vectors[part]])
        return path

    # -- reply format and verbosity ----------------------------------------------------------------
    def chat(self, text: str | None = None, role: str | None = None, *, history: Sequence[Turn] | None = None,
             **options: Any) -> str:
        """One turn: the character's whole reply (bare words; ``春日:「…」`` with ``reply_format="chatharuhi"``)."""
        return self._formatted(super().chat(text, role, history=history, **options))

    async def achat(self, text: str | None = None, role: str | None = None, *,
                    history: Sequence[Turn] | None = None, **options: Any) -> str:
        """Async twin of ``chat``."""
        return self._formatted(await super().achat(text, role, history=history, **options))

    def prepare(self, text: str, role: str | None = None, **kwargs: Any) -> "Plan":
        """The core's ``prepare``, said on stderr with ``verbose=True``."""
        plan = super().prepare(text, role, **kwargs)
        self._say_plan(plan)
        return plan

    def _formatted(self, reply: str) -> str:
        if self.reply_format == "chatharuhi":
            return self.prompt.line(self.character.speaker, reply)
        return reply

    def _say(self, message: str) -> None:
        if self.verbose:
            print(f"chatharuhi: {message}", file=sys.stderr)

    def _say_plan(self, plan: Plan) -> None:
        if self.verbose:
            used = plan.trace.included_scenes
            more = ", ..." if len(used) > 8 else ""
            self._say(f"{len(used)} scene(s) in the prompt ({', '.join(used[:8])}{more}); "
                      f"{plan.trace.total_tokens} prompt tokens")


def _core_keywords() -> list[str]:
    """The core chatbot's own keywords (the rest of ``**options`` go to the backend)."""
    from ..options import parameter_names

    names, _ = parameter_names(Chatbot.__init__)
    return sorted(names)
