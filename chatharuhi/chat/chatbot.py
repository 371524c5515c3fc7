"""``Chatbot``: the turn loop. Retrieve scenes, have the prompt builder pack them, stream the reply, commit the turn.

A chatbot is made of parts it owns: the character, a scene index, a ``PromptBuilder`` (persona, lore, layout,
story reuse, ``pack()``), a backend, and a ``History`` (turns, alternatives, the session store, the one
``commit()``). ChatHaruhi 1.0's keywords, names and methods live on top of it, in ``compat/``
(``chatharuhi.ChatHaruhi`` is that subclass). A turn is committed only when its reply completes: an error or a
stream closed early leaves history unchanged. Many chatbots for one character share one index and one embedder.
"""

from __future__ import annotations

import os
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from ..backends.base import Backend
from ..backends.registry import resolve_backend
from ..character.discovery import find_character
from ..character.folder import Character, load_character
from ..config import (
    DEFAULT_DENSE_WEIGHT,
    DEFAULT_DUPLICATE_THRESHOLD,
    DEFAULT_LEXICAL_WEIGHT,
    DEFAULT_TOP_K,
)
from ..errors import InputError, SessionError, UnknownOption
from ..models.selection import language_warning
from ..options import parameter_names
from ..prompting.builder import PromptBuilder, budget_for
from ..prompting.packing import Budget, HistoryTurn
from ..prompting.persona import Persona
from ..prompting.postprocess import PassThrough, ReplyFilter
from ..retrieval.embeddings import Embedder, get_embedder, warm_in_background
from ..retrieval.index import IndexFactory, chosen_index, query_window
from ..retrieval.turns import query_vectors
from ..sessions import open_session
from ..types import PartTrace, Trace, Turn
from .adapter import attach_adapter, with_adapter_options
from .history import History
from .memory import ChatMemory, Link, Memory
from .reply import Plan, Reply
from .saved import conversation_data, read_conversation_file, write_saved

if TYPE_CHECKING:
    from ..retrieval.index import SceneIndex
    from ..sessions import Session, SessionStore

class Chatbot:
    """A role-play chatbot that speaks as one character, grounded in the character's scenes."""

    def __init__(
        self,
        role: str | os.PathLike | None = None,
        llm: Backend | str | None = None,
        embedder: Embedder | str | None = None,
        characters_dir: str | os.PathLike | Iterable[str | os.PathLike] | None = None,
        *,
        character: Character | None = None,
        index: "SceneIndex | IndexFactory | None" = None,
        user_role: str | None = None,
        top_k: int = DEFAULT_TOP_K,
        story_tokens: int | None = None,
        history_tokens: int | None = None,
        context_window: int | None = None,
        reply_reserve: int | None = None,
        dense_weight: float = DEFAULT_DENSE_WEIGHT,
        lexical_weight: float = DEFAULT_LEXICAL_WEIGHT,
        duplicate_threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
        postprocess: bool = True,
        session: str | Session | None = None,
        sessions: SessionStore | None = None,
        persona: Persona | None = None,
        lorebook: Any = None,
        lore_tokens: int | None = None,
        vector_cache: Any = None,
        use_adapter: bool | None = None,
        story_reuse: bool | None = None,
        memory: bool = True,
        memory_tokens: int | None = None,
        summarize: bool = False,
        **llm_options: Any,
    ):
        """``llm_options`` go to the backend and are checked against what it accepts (``UnknownOption``).

        ``memory``: turns that left the history window come back when they match the message, and pinned facts
        are in every prompt, under ``memory_tokens`` (memory.py); ``summarize``: the backend also keeps a rolling
        summary of what left the window, in the background (summary.py).

        ``index``: the scene index, or a function ``(character, embedder) -> index`` (default: the character's
        shared index, its vectors cached on disk or in ``vector_cache``). ``story_reuse`` keeps a turn's story for
        the next while a fresh one would share a scene with it (reuse.py), so that a local model's KV cache is not
        read again; None: when the backend asks for it and the story budget is at least ``STORY_REUSE_MIN_TOKENS``."""
        store, saved = open_session(session, sessions)
        if role is None and character is None and saved is not None:
            role = saved.character
        if character is None:
            if role is None:
                raise InputError("no character given: pass role='haruhi' (or character=)")
            character = load_character(role) if isinstance(role, os.PathLike) else find_character(str(role),
                                                                                                 characters_dir)
        self.character = character
        llm_options = with_adapter_options(character, llm, llm_options, use_adapter)
        try:
            self.backend = resolve_backend(llm, **llm_options)
        except UnknownOption as exc:  # suggest among our own keywords too: it may be a misspelt one
            own = parameter_names(Chatbot.__init__)[0] | parameter_names(type(self).__init__)[0]
            raise UnknownOption(exc.name, f"{type(self).__name__}()", [*exc.valid, *own],
                                hint=f"(keywords the chatbot does not know go to the backend: {exc})") from None
        self._adapter_options = attach_adapter(character, self.backend, use_adapter)
        self.counter = self.backend.token_counter()
        self.embedder = get_embedder(embedder)
        self.index = chosen_index(character, self.embedder, index, vector_cache)
        if top_k > 0 or memory:
            warm_in_background(self.embedder)  # the first turn should not pay for loading the model
        self.top_k = top_k
        self.weights = {"dense_weight": dense_weight, "lexical_weight": lexical_weight,
                        "duplicate_threshold": duplicate_threshold}
        budget = budget_for(context_window or self.backend.context_window, self.backend.budget_hint,
                            reply_reserve=reply_reserve, story_tokens=story_tokens, history_tokens=history_tokens,
                            lore_tokens=lore_tokens, memory_tokens=memory_tokens)
        self.postprocess = postprocess
        language_warning(character.language, self.backend.model_entry, character.display_name)
        user_role = user_role or (saved.user_role if saved else None) or character.user_role
        self.prompt = PromptBuilder(character, self.counter, budget, user_role=user_role, persona=persona,
                                    lorebook=lorebook, lore_tokens=lore_tokens, layout=self.backend.prompt_layout,
                                    story_reuse=story_reuse)
        self.user_role = self.prompt.user_role
        self._own_names = {character.speaker, character.display_name, *character.aliases}
        self.others: tuple[str, ...] = ()  # who else speaks here (a group chat's speaker tags): their lines end a reply
        self.dialogue = History(self.prompt.render_turn, store=store, session=saved, character=character.name,
                                user_role=self.user_role)
        self.last_trace: Trace | None = None
        for name, value in (("memory", memory), ("summarize", summarize)):
            if value not in (True, False):
                raise InputError(f"{name}={value!r}: use True or False")
        if summarize and not memory:
            raise InputError("summarize=True needs memory=True: the summary is part of the conversation's memory")
        self.memories = ChatMemory(self.new_memory, self.dialogue, self.prompt.render_turn, on=memory,
                                   summarize=summarize)
        if saved is not None:
            if saved.character != character.name:
                raise SessionError(f"session {saved.id} is a conversation with {saved.character!r}, "
                                   f"not {character.name!r}: leave out role= to resume it")
            self.dialogue.reload()
            if self.memory is not None:
                self.memory.load()

    def new_memory(self, link: Link | None, *, summarize: bool = False, embed_missing: bool = True) -> Memory:
        """A memory of one of this character's conversations, measured and searched as this chatbot's prompts are:
        kept where ``link`` says (None: nowhere); ``summarize``: this backend keeps its rolling summary;
        ``embed_missing=False``: a caller's own turns, recalled from the vectors already made (else lexically)."""
        c = self.character
        return Memory(self.index.embedder, self.counter, lambda: self.budget.memory_tokens, language=c.language,
                      character=c.name, link=link, dense_weight=self.weights["dense_weight"],
                      lexical_weight=self.weights["lexical_weight"], summarize_with=self.backend if summarize else None,
                      names=(c.display_name, self.prompt.user_name), embed_missing=embed_missing)

    # -- the parts' settings, read where they live -------------------------------------------------
    @property
    def memory(self) -> Memory | None:
        """The conversation's memory (its pinned facts, summary and earlier turns); None with ``memory=False``."""
        return self.memories.current

    @property
    def budget(self) -> Budget:
        """How the model's window is shared (the prompt builder's; assignable)."""
        return self.prompt.budget

    @budget.setter
    def budget(self, value: Budget) -> None:
        self.prompt.budget = value

    @property
    def persona(self) -> Persona | None:
        """The user's persona, if any."""
        return self.prompt.persona

    @property
    def lorebook(self) -> Any:
        """The lorebooks in use (the folder's and ``lorebook=``), merged; None without any."""
        return self.prompt.lorebook

    @property
    def sessions(self) -> "SessionStore | None":
        """The session store the turns are written to, if any."""
        return self.dialogue.store

    @property
    def session(self) -> "Session | None":
        """The stored conversation (None before the first turn, or without a store)."""
        return self.dialogue.session

    # -- history -----------------------------------------------------------------------------------
    @property
    def history(self) -> list[Turn]:
        """The committed turns, oldest first (a copy)."""
        return self.dialogue.turns

    def reset(self) -> None:
        """Forget the conversation (with a store, the next turn starts a new session; the old one is kept)."""
        self.dialogue.reset()
        self.last_trace = None
        self.memories.reset()

    def _commit(self, plan: Plan, reply: str) -> None:
        self.dialogue.commit(Turn(plan.user_role, plan.text, reply), plan.trace.as_dict())
        self._committed(plan)

    def _committed(self, plan: Plan) -> None:
        self.last_trace = plan.trace
        self.memories.kept(plan.text, plan.trace)

    def regenerate(self, **options: Any) -> Reply:
        """Answer the last user message again; the old reply is kept as an alternative ("swipe")."""
        turns = self.dialogue.turns
        if not turns:
            raise InputError("nothing to regenerate: the conversation has no turns yet")
        plan = self._plan(turns[-1].text, turns[-1].user_role, (), turns[:-1], own=True)

        def replace_last(plan: Plan, reply: str) -> None:
            self.dialogue.commit_alternative(reply, plan.trace.as_dict(), expect=len(turns))
            self._committed(plan)

        return self._reply(plan, options, replace_last)

    def continue_reply(self, **options: Any) -> Reply:
        """Go on with the last reply from where it stopped (one cut by ``max_tokens``, say): the model reads its own
        text as the start of its answer (a local model's prefill), and the longer reply replaces the last one."""
        turns = self.dialogue.turns
        if not turns:
            raise InputError("nothing to continue: the conversation has no turns yet")
        if not self.backend.supports_prefill:
            raise InputError(f"the {self.backend.name} backend cannot go on from a reply's own text: regenerate "
                             "instead, or raise max_tokens")
        last = turns[-1]
        plan = self._plan(last.text, last.user_role, (), turns[:-1], own=True)  # its own memory answers
        options = self.call_options(plan, options)
        options["prefill"] = options.get("prefill", "") + last.reply  # the filter strips the tag, keeps the text

        def extend_last(plan: Plan, reply: str) -> None:
            self.dialogue.extend_last(reply.strip() or last.reply, expect=len(turns))
            self._committed(plan)

        return Reply(self.backend, plan, options, filter=self.reply_filter, commit=extend_last)

    def alternatives(self, index: int = -1) -> list[str]:
        """Every reply turn ``index`` has had, oldest first; the last one is current."""
        return self.dialogue.alternatives(index)

    def undo(self) -> Turn:
        """Delete the last turn (kept, flagged as deleted, in a session store) and return it."""
        return self.dialogue.undo()

    def edit_last(self, text: str) -> None:
        """Replace what the user said in the last turn (call ``regenerate()`` to have it answered anew)."""
        self.dialogue.edit_last(text)

    # -- one turn ----------------------------------------------------------------------------------
    def prepare(self, text: str, role: str | None = None, *, exclude: Iterable[str] = (),
                history: Sequence[Turn] | None = None, memory: Memory | None = None) -> Plan:
        """Retrieve and pack: the messages a turn would send, with their trace (no model call).

        ``history`` replaces the chatbot's own history for this turn (a stateless caller such as the
        HTTP server passes the conversation it received; its memory is then what that conversation holds, or
        ``memory``: that conversation's stored one, from ``session_memory``)."""
        return self._plan(text, role, tuple(exclude), history, own=history is None, given=memory)

    def session_memory(self, store: "SessionStore", session_id: str) -> Memory:
        """The memory of one of this character's stored conversations (its pinned facts, summary and vectors), for
        a caller that passes the conversation's turns itself (``prepare(history=..., memory=...)``)."""
        return self.memories.of_session(store, session_id)

    def _plan(self, text: str, role: str | None, exclude: tuple[str, ...], history: Sequence[Turn] | None,
              own: bool, given: Memory | None = None) -> Plan:
        """``prepare``; ``own``: ``history`` is this chatbot's conversation (cut short to regenerate its last turn),
        so its own memory answers; ``given``: the memory of the caller's conversation."""
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"empty message: type something for {self.character.display_name} to answer")
        text = text.strip()
        user_role = (role or self.user_role).strip() or self.user_role
        turns = self.dialogue.turns if history is None else list(history)
        memory, remembered = self.memories.for_turn(turns, own=own, given=given)
        rendered = self.dialogue.rendered if history is None else self.dialogue.render(history)
        plan = self.compose(text, rendered, self.prompt.line(user_role, text), user_role=user_role, text=text,
                            memory=memory, remembered=remembered, exclude=exclude)
        if memory is not None and own:
            self.memories.held(plan.trace)
        return plan

    def compose(self, search: str, rendered: list[HistoryTurn], line: str, *, user_role: str, text: str,
                memory: Memory | None = None, remembered: Sequence[str] = (), exclude: tuple[str, ...] = ()) -> Plan:
        """A turn's plan (no model call): retrieve scenes for ``search`` and earlier turns from ``memory`` (none
        of ``remembered``: still in the window), then pack them with ``rendered`` as the history and ``line`` as
        the newest message. ``text`` is what the turn commits as the user's words."""
        t0 = perf_counter()
        hits, vector = [], None
        if self.top_k > 0 or memory is not None:
            vector = self.query_vector(search)
        t1 = perf_counter()
        if self.top_k > 0:
            hits = self.index.search(search, self.top_k, exclude=exclude, query_vector=vector, **self.weights)
        t2 = perf_counter()
        units, notes = [], []
        if memory is not None:
            units = memory.recall(search, vector, user=self.prompt.user_name, exclude=remembered)
            notes = memory.notes()
        t3 = perf_counter()
        packed, overlapping = self.prompt.pack(hits, search, rendered, line, self.prompt.query(line),
                                               recall=not exclude, memory=units)
        t4 = perf_counter()
        for dropped, kept in getattr(hits, "duplicates", ()):
            packed.trace.scenes.append(PartTrace(dropped, 0, False, f"near-duplicate of {kept}"))
        packed.trace.scenes.extend(overlapping)
        packed.trace.memory.extend(notes)
        packed.trace.timings_ms = {"embed": (t1 - t0) * 1e3, "retrieve": (t2 - t1) * 1e3, "pack": (t4 - t3) * 1e3}
        if memory is not None:
            packed.trace.timings_ms["memory"] = (t3 - t2) * 1e3
        return Plan(packed.messages, packed.trace, user_role, text)

    def query_vector(self, text: str) -> Any:
        """The message's query vector (from the last ``QUERY_EMBED_MAX_CHARS`` characters), embedded once: the
        scenes' retrieval and, later, the conversation's memory both use it."""
        key, embedder_id = query_window(text), self.index.embedder.id
        vector = query_vectors.get(embedder_id, key)
        if vector is None:
            vector = self.index.embed_query(text)
            query_vectors.put(embedder_id, key, vector)
        return vector

    def call_options(self, plan: Plan, options: dict[str, Any]) -> dict[str, Any]:
        """The backend's options for ``plan``: the caller's (checked), the character's adapter, the reply's length,
        and the stop strings and prefill that keep the reply the character's own."""
        self.backend.check_call_options(options)  # a misspelt option is an error, not a silent no-op
        for key, value in self._adapter_options.items():  # the character's adapter, unless the call names one
            options.setdefault(key, value)
        options.setdefault("max_tokens", self.budget.reply_reserve)
        # a caller's stop strings come first and add to the character's own (a transcript backend gets none)
        if self.postprocess and not self.backend.transcript:
            own = [f"\n{name}{colon}" for name in (plan.user_role, *self.others) for colon in (":", "：")]
            given = [options["stop"]] if isinstance(options.get("stop"), str) else list(options.get("stop") or [])
            options["stop"] = list(dict.fromkeys([*given, *own]))
            if self.backend.supports_prefill and "prefill" not in options:
                # Local models: the reply opens as `春日:「` and ends at `」` (keeps small models in character).
                # The backend yields the prefill first, so the filter strips the tag as usual.
                head, _, tail = self.prompt.line(self.character.speaker, "\0").partition("\0")
                options["prefill"] = head
                options["stop"] = [*options["stop"], tail.strip()] if tail.strip() else options["stop"]
        return options

    def reply_filter(self) -> ReplyFilter | PassThrough:
        """A fresh filter that keeps the character's own words (none for a transcript backend such as debug)."""
        if not self.postprocess or self.backend.transcript:
            return PassThrough()
        c = self.character
        return ReplyFilter(self._own_names, c.speakers | {self.user_role, *self.others}, c.manifest.narrators)

    def _reply(self, plan: Plan, options: dict[str, Any], commit: Callable[[Plan, str], None] | None) -> Reply:
        return Reply(self.backend, plan, self.call_options(plan, options), filter=self.reply_filter, commit=commit)

    def stream(self, text: str | None = None, role: str | None = None, *, history: Sequence[Turn] | None = None,
               memory: Memory | None = None, **options: Any) -> Reply:
        """Start a turn and return the streaming ``Reply`` (iterate it for chunks; ``async for`` works too).

        With ``history=`` the turn runs on that conversation and is not committed to the chatbot's own
        (``memory=``: that conversation's memory, see ``session_memory``)."""
        plan = self.prepare(text, role, history=history, memory=memory)
        return self._reply(plan, options, self._commit if history is None else None)

    def chat(self, text: str | None = None, role: str | None = None, *, history: Sequence[Turn] | None = None,
             **options: Any) -> str:
        """One turn: the character's whole reply."""
        return self.stream(text, role, history=history, **options).text()

    def astream(self, text: str | None = None, role: str | None = None, *,
                history: Sequence[Turn] | None = None, **options: Any) -> Reply:
        """Async twin of ``stream``: ``async for chunk in bot.astream(...)``; the same ``Reply`` (finish reason,
        usage, cache figures), streamed on the event loop; history is updated when the reply completes."""
        return self.stream(text, role, history=history, **options)

    async def achat(self, text: str | None = None, role: str | None = None, *,
                    history: Sequence[Turn] | None = None, **options: Any) -> str:
        """Async twin of ``chat``."""
        return await self.astream(text, role, history=history, **options).atext()

    # -- persistence -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the conversation to a JSON file (atomically)."""
        write_saved(path, conversation_data(self.character, self.user_role, self.history))

    @classmethod
    def load(cls, path: str | os.PathLike, **kwargs: Any) -> "Chatbot":
        """Resume a conversation saved with ``save``; keyword arguments configure the new chatbot."""
        data, history = read_conversation_file(path)
        if "role" not in kwargs and "character" not in kwargs:
            saved = Path(data.get("character_path", ""))
            kwargs["role"] = saved if saved.is_dir() else data["character"]
        kwargs.setdefault("user_role", data.get("user_role"))
        bot = cls(**kwargs)
        bot.dialogue.replace(history)
        return bot
