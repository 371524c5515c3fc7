"""``ChatHaruhi``: the turn loop. Retrieve scenes, pack the prompt, stream the reply, keep history.

A turn is committed to history only when its reply completes: an error or a stream closed early
leaves history unchanged. Many chatbots for one character share one index and one embedder.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from dataclasses import asdict
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterable, Sequence

from ..backends.base import Backend
from ..backends.registry import resolve_backend
from ..character.discovery import find_character
from ..character.folder import Character, load_character
from ..compat import REPLY_FORMATS, ChatHaruhiCompat, build_index, resolve_legacy, seed_story_vectors
from ..config import (
    DEFAULT_DENSE_WEIGHT,
    DEFAULT_DUPLICATE_THRESHOLD,
    DEFAULT_HISTORY_TOKENS,
    DEFAULT_LEXICAL_WEIGHT,
    DEFAULT_LORE_TOKENS,
    DEFAULT_REPLY_RESERVE,
    DEFAULT_STORY_TOKENS,
    DEFAULT_TOP_K,
)
from ..errors import AdapterError, InputError, SessionError, UnknownOption
from ..models.selection import language_warning
from ..options import parameter_names
from ..prompting.packing import Budget, HistoryTurn
from ..prompting.persona import Persona
from ..prompting.postprocess import PassThrough, ReplyFilter
from ..prompting.story import StoryUnits
from ..prompting.templates import PromptSet
from ..retrieval.embeddings import Embedder, get_embedder
from ..sessions import open_session
from ..types import PartTrace, Trace, Turn
from .edits import ConversationEdits
from .persona_and_lore import PersonaAndLore
from .reply import Plan, Reply
from .story_packing import StoryPacking

if TYPE_CHECKING:
    from ..sessions import Session, SessionStore

CONVERSATION_FORMAT = "chatharuhi.conversation/1"


def gguf_adapter_options(adapter: Any, llm: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The options that load the base of the character's GGUF adapter (maybe a pulled one) with a llama_cpp backend
    to be built: ``chatharuhi.models.adapters.llama_adapter_options``."""
    from ..models.adapters import llama_adapter_options

    return llama_adapter_options(adapter, llm, options)


def _warm_in_background(embedder: Embedder) -> None:
    """Load the embedder's model in a daemon thread, if it loads lazily (its lock prevents a double load)."""
    warm = getattr(embedder, "warm", None)
    if callable(warm) and getattr(embedder, "_model", True) is None:
        threading.Thread(target=warm, name="chatharuhi-warm-embedder", daemon=True).start()


def _same(name: str, value: Any, old_name: str, old_value: Any) -> Any:
    """One setting under two names (ours and ChatHaruhi's): either, or both when they agree."""
    if value is not None and old_value is not None and value != old_value:
        raise InputError(f"{name}={value!r} and {old_name}={old_value!r} set the same thing: pass one")
    return value if value is not None else old_value


class ChatHaruhi(ChatHaruhiCompat, ConversationEdits, PersonaAndLore, StoryPacking):
    """A role-play chatbot that speaks as one character, grounded in the character's scenes."""

    def __init__(
        self,
        role: str | os.PathLike | None = None,
        llm: Backend | str | None = None,
        embedder: Embedder | str | None = None,
        characters_dir: str | os.PathLike | Iterable[str | os.PathLike] | None = None,
        *,
        character: Character | None = None,
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
        role_name: str | None = None,
        session: str | Session | None = None,
        sessions: SessionStore | None = None,
        persona: Persona | None = None,
        lorebook: Any = None,
        lore_tokens: int | None = None,
        role_from_hf: str | None = None,
        vector_cache: Any = None,
        # ChatHaruhi's own keywords (see compat/ and docs/chatharuhi-migration.md):
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
        use_adapter: bool | None = None,
        story_reuse: bool | None = None,
        **llm_options: Any,
    ):
        """``llm_options`` go to the backend and are checked against what it accepts (``UnknownOption``).

        ``story_reuse`` keeps a turn's story for the next while a fresh one would share a scene with it
        (reuse.py), so that a local model's KV cache is not read again; None: when the backend asks for it
        and the story budget is at least ``STORY_REUSE_MIN_TOKENS``."""
        story_tokens = _same("story_tokens", story_tokens, "max_len_story", max_len_story)
        history_tokens = _same("history_tokens", history_tokens, "max_len_history", max_len_history)
        searched = _same("top_k", top_k if top_k != DEFAULT_TOP_K else None, "k_search", k_search)
        top_k = top_k if searched is None else searched
        if reply_format not in REPLY_FORMATS:
            raise UnknownOption(reply_format, "reply_format=", REPLY_FORMATS, kind="value")
        self.reply_format, self.verbose = reply_format, verbose
        legacy = resolve_legacy(
            role=role, character=character, characters_dir=characters_dir, llm=llm, llm_options=llm_options,
            embedder=embedder, role_name=role_name, role_from_hf=role_from_hf, role_from_jsonl=role_from_jsonl,
            system_prompt=system_prompt, story_text_folder=story_text_folder, story_db=story_db,
            embedding=embedding, db_type=db_type, strict_jsonl=strict_jsonl)
        character = character or legacy.character
        llm, llm_options, embedder = legacy.llm, legacy.llm_options, legacy.embedder
        self.sessions, self.session = open_session(session, sessions)
        if role is None and character is None and self.session is not None:
            role = self.session.character
        if character is None:
            if role is None:
                raise InputError("no character given: pass role='haruhi' (or character=)")
            if isinstance(role, os.PathLike):
                character = load_character(role)
            else:
                character = find_character(str(role), characters_dir)
        self.character = character
        if use_adapter not in (None, True, False):
            raise InputError(f"use_adapter={use_adapter!r}: use None (the character's adapter when the backend can "
                             "apply it), True (required) or False (the base model)")
        if use_adapter is not False and character.adapter is not None:
            llm_options = gguf_adapter_options(character.adapter, llm, llm_options)
        try:
            self.backend = resolve_backend(llm, **llm_options)
        except UnknownOption as exc:  # suggest among our own keywords too: it may be a misspelt one
            own, _ = parameter_names(ChatHaruhi.__init__)
            raise UnknownOption(exc.name, "ChatHaruhi()", [*exc.valid, *own],
                                hint=f"(keywords the chatbot does not know go to the backend: {exc})") from None
        self._adapter_options = self._attach_adapter(use_adapter)
        self.counter = self.backend.token_counter()
        self.embedder = get_embedder(embedder)
        seed_story_vectors(legacy, self.embedder)
        self.index = build_index(legacy, character, self.embedder, vector_cache)  # None: files in the home folder
        self._say(f"{character.name}: {len(self.index.scenes)} scenes, embedder {self.embedder.id}, "
                  f"backend {self.backend.name}")
        if top_k > 0:
            _warm_in_background(self.embedder)  # the first turn should not pay for loading the model
        self.user_role = user_role or (self.session.user_role if self.session else None) or character.user_role
        self.top_k = top_k
        self.weights = {"dense_weight": dense_weight, "lexical_weight": lexical_weight,
                        "duplicate_threshold": duplicate_threshold}
        hint = getattr(self.backend, "budget_hint", {})  # small local models want a short prompt
        self.budget = Budget(
            context_window or self.backend.context_window,
            reply_reserve if reply_reserve is not None else hint.get("reply_reserve", DEFAULT_REPLY_RESERVE),
            story_tokens if story_tokens is not None else hint.get("story_tokens", DEFAULT_STORY_TOKENS),
            history_tokens if history_tokens is not None else hint.get("history_tokens", DEFAULT_HISTORY_TOKENS),
            lore_tokens if lore_tokens is not None else DEFAULT_LORE_TOKENS,
        )
        self._layout, self._stories = self._story_layout(story_reuse)
        self.postprocess = postprocess
        self.prompts = PromptSet.load(character.language)
        language_warning(character.language, getattr(self.backend, "model_entry", None), character.display_name)
        self._header = self.prompts.story_header.render(character=character.display_name)
        self._setup_persona_and_lore(persona, lorebook, lore_tokens)
        self._scenes = StoryUnits(self.prompts, character, self._user_name, self.counter, self._header)
        self._own_names = {character.speaker, character.display_name, *character.aliases}
        self._history: list[Turn] = []
        self._rendered: list[HistoryTurn] = []  # each turn rendered once, when it is committed
        self._lock = threading.Lock()
        self.last_trace: Trace | None = None
        self._alternatives: dict[int, list[str]] = {}  # turn index -> every reply it has had (no store)
        if self.session is not None:
            if self.session.character != character.name:
                raise SessionError(f"session {self.session.id} is a conversation with {self.session.character!r}, "
                                   f"not {character.name!r}: leave out role= to resume it")
            self._set_history(self.sessions.turns(self.session.id))

    def _attach_adapter(self, mode: bool | None) -> dict[str, Any]:
        """Load the character's adapter into the backend now (a bad one fails here, not at the first reply)."""
        spec = self.character.adapter
        if spec is None or mode is False:
            if mode is True:
                raise InputError(f"use_adapter=True but {self.character.name!r} names no adapter: add an [adapter] "
                                 "table to its character.toml")
            return {}
        options = self.backend.use_adapter(spec)
        if options is None:
            message = (f"character {self.character.name!r} names a LoRA adapter, but the {self.backend.name} backend "
                       "cannot apply it: use the transformers backend with its base (path), llama_cpp or embedded "
                       "with its base (gguf), or an OpenAI-compatible server (served_name)")
            if mode is True:
                raise AdapterError(message)
            warnings.warn(message + "; replying with the base model (use_adapter=False silences this)", stacklevel=3)
            return {}
        return options

    # -- history -------------------------------------------------------------------------------
    @property
    def history(self) -> list[Turn]:
        """The committed turns, oldest first (a copy)."""
        with self._lock:
            return list(self._history)

    def reset(self) -> None:
        """Forget the conversation."""
        with self._lock:
            self._history.clear()
            self._rendered.clear()
            self._alternatives.clear()
            self.last_trace = None
            self.session = None  # with a store, the next turn starts a new session; the old one is kept

    def _set_history(self, turns: Iterable[Turn]) -> None:
        with self._lock:
            self._history = list(turns)
            self._rendered = [self._render(i, t) for i, t in enumerate(self._history)]

    def _render(self, i: int, turn: Turn) -> HistoryTurn:
        user, reply = self._line(turn.user_role, turn.text), self._line(self.character.speaker, turn.reply)
        return HistoryTurn(str(i), user, reply)

    def _commit(self, plan: Plan, reply: str) -> None:
        turn = Turn(plan.user_role, plan.text, reply)
        with self._lock:
            if self.sessions is not None:  # stored first: if the write fails, memory is unchanged too
                if self.session is None:
                    self.session = self.sessions.create(self.character.name, self.user_role)
                self.sessions.append_turn(self.session.id, turn, plan.trace.as_dict())
            self._rendered.append(self._render(len(self._history), turn))
            self._history.append(turn)
            self.last_trace = plan.trace

    # -- one turn ------------------------------------------------------------------------------
    def _line(self, role: str, text: str) -> str:
        return self.prompts.line.render(role=role, text=text)

    def prepare(self, text: str, role: str | None = None, *, exclude: Iterable[str] = (),
                history: Sequence[Turn] | None = None) -> Plan:
        """Retrieve and pack: the messages a turn would send, with their trace (no model call).

        ``history`` replaces the chatbot's own history for this turn (a stateless caller such as the
        HTTP server passes the conversation it received)."""
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"empty message: type something for {self.character.display_name} to answer")
        text, exclude = text.strip(), tuple(exclude)
        user_role = (role or self.user_role).strip() or self.user_role
        t0 = perf_counter()
        hits = []
        if self.top_k > 0:
            vector = self.index.embed_query(text)
            t1 = perf_counter()
            hits = self.index.search(text, self.top_k, exclude=exclude, query_vector=vector, **self.weights)
        else:
            t1 = t0
        t2 = perf_counter()
        if history is None:
            with self._lock:
                rendered = list(self._rendered)
        else:
            rendered = [self._render(i, t) for i, t in enumerate(history)]
        line = query = self._line(user_role, text)
        if self._post_history:  # a card's post-history instructions ride after the newest message
            query = f"{query}\n\n{self._post_history}"
        packed, overlapping = self._pack(hits, text, rendered, line, query, recall=not exclude)
        t3 = perf_counter()
        for dropped, kept in getattr(hits, "duplicates", ()):
            packed.trace.scenes.append(PartTrace(dropped, 0, False, f"near-duplicate of {kept}"))
        packed.trace.scenes.extend(overlapping)
        packed.trace.timings_ms = {"embed": (t1 - t0) * 1e3, "retrieve": (t2 - t1) * 1e3, "pack": (t3 - t2) * 1e3}
        plan = Plan(packed.messages, packed.trace, user_role, text)
        self._say_plan(plan)
        return plan

    def _options(self, plan: Plan, options: dict[str, Any]) -> dict[str, Any]:
        self.backend.check_call_options(options)  # a misspelt option is an error, not a silent no-op
        for key, value in self._adapter_options.items():  # the character's adapter, unless the call names one
            options.setdefault(key, value)
        options.setdefault("max_tokens", self.budget.reply_reserve)
        # a caller's stop strings come first and add to the character's own (a transcript backend gets none)
        if self.postprocess and not getattr(self.backend, "transcript", False):
            own = [f"\n{plan.user_role}:", f"\n{plan.user_role}："]
            given = [options["stop"]] if isinstance(options.get("stop"), str) else list(options.get("stop") or [])
            options["stop"] = list(dict.fromkeys([*given, *own]))
            if getattr(self.backend, "supports_prefill", False) and "prefill" not in options:
                # Local models: the reply opens as `春日:「` and ends at `」` (keeps small models in character).
                # The backend yields the prefill first, so the filter strips the tag as usual.
                head, _, tail = self._line(self.character.speaker, "\0").partition("\0")
                options["prefill"] = head
                options["stop"] = [*options["stop"], tail.strip()] if tail.strip() else options["stop"]
        return options

    def _filter(self) -> ReplyFilter | PassThrough:
        if not self.postprocess or getattr(self.backend, "transcript", False):  # e.g. the debug backend
            return PassThrough()
        c = self.character
        return ReplyFilter(self._own_names, c.speakers | {self.user_role}, c.manifest.narrators)

    def stream(self, text: str | None = None, role: str | None = None, *, history: Sequence[Turn] | None = None,
               **options: Any) -> Reply:
        """Start a turn and return the streaming ``Reply`` (iterate it for chunks).

        With ``history=`` the turn runs on that conversation and is not committed to the chatbot's own."""
        plan = self.prepare(text, role, history=history)
        return Reply(self, plan, self._options(plan, options), commit=history is None)

    def chat(self, text: str | None = None, role: str | None = None, *, history: Sequence[Turn] | None = None,
             **options: Any) -> str:
        """One turn: the character's whole reply (bare words; ``春日:「…」`` with ``reply_format="chatharuhi"``)."""
        return self._formatted(self.stream(text, role, history=history, **options).text())

    async def astream(self, text: str | None = None, role: str | None = None, *,
                      history: Sequence[Turn] | None = None, **options: Any) -> AsyncIterator[str]:
        """Async twin of ``stream``: yields chunks; history is updated when the reply completes."""
        plan = self.prepare(text, role, history=history)
        filt = self._filter()
        async for chunk in self.backend.astream(plan.messages, **self._options(plan, options)):
            if out := filt.feed(chunk):
                yield out
            if filt.stopped:
                break
        if tail := filt.finish():
            yield tail
        if history is None:
            self._commit(plan, filt.text)

    async def achat(self, text: str | None = None, role: str | None = None, *,
                    history: Sequence[Turn] | None = None, **options: Any) -> str:
        """Async twin of ``chat``."""
        return self._formatted("".join([chunk async for chunk in self.astream(text, role, history=history,
                                                                              **options)]))

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the conversation to a JSON file (atomically)."""
        path = Path(path).expanduser()
        data = {"format": CONVERSATION_FORMAT, "character": self.character.name,
                "character_path": str(self.character.path), "user_role": self.user_role,
                "history": [asdict(t) for t in self.history]}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike, **kwargs: Any) -> "ChatHaruhi":
        """Resume a conversation saved with ``save``; keyword arguments configure the new chatbot."""
        path = Path(path).expanduser()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != CONVERSATION_FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, expected {CONVERSATION_FORMAT!r}")
            history = [Turn(**t) for t in data["history"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SessionError(f"{path}: cannot read the saved conversation: {exc}") from None
        if "role" not in kwargs and "character" not in kwargs:
            saved = Path(data.get("character_path", ""))
            kwargs["role"] = saved if saved.is_dir() else data["character"]
        kwargs.setdefault("user_role", data.get("user_role"))
        bot = cls(**kwargs)
        bot._set_history(history)
        return bot
