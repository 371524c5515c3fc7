"""``ChatHaruhi``: the turn loop. Retrieve scenes, pack the prompt, stream the reply, keep history.

A turn is committed to history only when its reply completes: an error or a stream closed early
leaves history unchanged. Many chatbots for one character share one index and one embedder.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from time import perf_counter
from typing import Any, AsyncIterator, Iterable, Iterator, Sequence

from .backends.base import Backend
from .backends.registry import resolve_backend
from .character import Character, load_character
from .config import (
    DEFAULT_DENSE_WEIGHT,
    DEFAULT_DUPLICATE_THRESHOLD,
    DEFAULT_HISTORY_TOKENS,
    DEFAULT_LEXICAL_WEIGHT,
    DEFAULT_REPLY_RESERVE,
    DEFAULT_STORY_TOKENS,
    DEFAULT_TOP_K,
)
from .discovery import find_character
from .embeddings import Embedder, get_embedder
from .errors import InputError, SessionError
from .index import index_for
from .packing import Budget, HistoryTurn, SceneUnit, pack
from .postprocess import ReplyFilter
from .prompts import PromptSet
from .types import Message, PartTrace, Trace, Turn

CONVERSATION_FORMAT = "chatharuhi.conversation/1"


@dataclass
class Plan:
    """Everything decided before the model is called: the messages and why they look that way."""

    messages: list[Message]
    trace: Trace
    user_role: str
    text: str


class Reply:
    """A streamed reply: iterate it for chunks; ``text()`` joins it. History is updated on completion."""

    def __init__(self, bot: "ChatHaruhi", plan: Plan, options: dict[str, Any], commit: bool = True):
        self.bot, self.plan, self.options, self.commit = bot, plan, options, commit
        self._text: str | None = None
        self._started = False

    @property
    def trace(self) -> Trace:
        """The packing trace of this turn."""
        return self.plan.trace

    def __iter__(self) -> Iterator[str]:
        if self._text is not None:  # replay a finished reply
            yield self._text
            return
        if self._started:
            raise RuntimeError("this reply is already being streamed")
        self._started = True
        filt = self.bot._filter()
        parts: list[str] = []
        stream = self.bot.backend.stream(self.plan.messages, **self.options)
        try:
            for chunk in stream:
                out = filt.feed(chunk) if filt else chunk
                if out:
                    parts.append(out)
                    yield out
                if filt and filt.stopped:
                    break
            tail = filt.finish() if filt else ""
            if tail:
                parts.append(tail)
                yield tail
        finally:  # also runs when the consumer stops early: then nothing is committed
            close = getattr(stream, "close", None)
            if close:
                close()
        self._text = filt.text if filt else "".join(parts)
        if self.commit:
            self.bot._commit(self.plan, self._text)

    def text(self) -> str:
        """The whole reply (streams it if it has not been consumed yet)."""
        if self._text is None:
            for _ in self:
                pass
        return self._text or ""

    def __str__(self) -> str:
        return self.text()


def _warm_in_background(embedder: Embedder) -> None:
    """Load the embedder's model in a daemon thread, if it loads lazily (its lock prevents a double load)."""
    warm = getattr(embedder, "warm", None)
    if callable(warm) and getattr(embedder, "_model", True) is None:
        threading.Thread(target=warm, name="chatharuhi-warm-embedder", daemon=True).start()


class ChatHaruhi:
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
        story_tokens: int = DEFAULT_STORY_TOKENS,
        history_tokens: int = DEFAULT_HISTORY_TOKENS,
        context_window: int | None = None,
        reply_reserve: int = DEFAULT_REPLY_RESERVE,
        dense_weight: float = DEFAULT_DENSE_WEIGHT,
        lexical_weight: float = DEFAULT_LEXICAL_WEIGHT,
        duplicate_threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
        postprocess: bool = True,
        role_name: str | None = None,
        **llm_options: Any,
    ):
        role = role if role is not None else role_name  # ChatHaruhi's keyword
        if character is None:
            if role is None:
                raise InputError("no character given: pass role='haruhi' (or character=)")
            if isinstance(role, os.PathLike):
                character = load_character(role)
            else:
                character = find_character(str(role), characters_dir)
        self.character = character
        self.backend = resolve_backend(llm, **llm_options)
        self.counter = self.backend.token_counter()
        self.embedder = get_embedder(embedder)
        self.index = index_for(character, self.embedder)
        if top_k > 0:
            _warm_in_background(self.embedder)  # the first turn should not pay for loading the model
        self.user_role = user_role or character.user_role
        self.top_k = top_k
        self.weights = {"dense_weight": dense_weight, "lexical_weight": lexical_weight,
                        "duplicate_threshold": duplicate_threshold}
        self.budget = Budget(context_window or self.backend.context_window, reply_reserve, story_tokens, history_tokens)
        self.postprocess = postprocess
        self.prompts = PromptSet.load(character.language)
        self._header = self.prompts.story_header.render(character=character.display_name)
        self._units: dict[str, str] = {}
        self._own_names = {character.speaker, character.display_name, *character.aliases}
        self._history: list[Turn] = []
        self._rendered: list[HistoryTurn] = []  # each turn rendered once, when it is committed
        self._lock = threading.Lock()
        self.last_trace: Trace | None = None

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
            self.last_trace = None

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
            self._rendered.append(self._render(len(self._history), turn))
            self._history.append(turn)
            self.last_trace = plan.trace

    # -- one turn ------------------------------------------------------------------------------
    def _line(self, role: str, text: str) -> str:
        return self.prompts.line.render(role=role, text=text)

    def _unit(self, scene) -> str:
        unit = self._units.get(scene.id)
        if unit is None:
            unit = self._units[scene.id] = self.prompts.scene.render(scene=scene.text)
        return unit

    def prepare(self, text: str, role: str | None = None, *, exclude: Iterable[str] = (),
                history: Sequence[Turn] | None = None) -> Plan:
        """Retrieve and pack: the messages a turn would send, with their trace (no model call).

        ``history`` replaces the chatbot's own history for this turn (a stateless caller such as the
        HTTP server passes the conversation it received)."""
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"empty message: type something for {self.character.display_name} to answer")
        text = text.strip()
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
        units = [SceneUnit(h.scene.id, self._unit(h.scene), round(h.score, 4)) for h in hits]
        if history is None:
            with self._lock:
                rendered = list(self._rendered)
        else:
            rendered = [self._render(i, t) for i, t in enumerate(history)]
        packed = pack(self.character.system_prompt, self._header, units, rendered,
                      self._line(user_role, text), self.counter, self.budget)
        t3 = perf_counter()
        for dropped, kept in getattr(hits, "duplicates", ()):
            packed.trace.scenes.append(PartTrace(dropped, 0, False, f"near-duplicate of {kept}"))
        packed.trace.timings_ms = {"embed": (t1 - t0) * 1e3, "retrieve": (t2 - t1) * 1e3, "pack": (t3 - t2) * 1e3}
        return Plan(packed.messages, packed.trace, user_role, text)

    def _options(self, plan: Plan, options: dict[str, Any]) -> dict[str, Any]:
        options.setdefault("max_tokens", self.budget.reply_reserve)
        if self.postprocess:
            options.setdefault("stop", [f"\n{plan.user_role}:", f"\n{plan.user_role}："])
        return options

    def _filter(self) -> ReplyFilter | None:
        if not self.postprocess:
            return None
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
        """One turn: the character's whole reply."""
        return self.stream(text, role, history=history, **options).text()

    async def astream(self, text: str | None = None, role: str | None = None, *,
                      history: Sequence[Turn] | None = None, **options: Any) -> AsyncIterator[str]:
        """Async twin of ``stream``: yields chunks; history is updated when the reply completes."""
        plan = self.prepare(text, role, history=history)
        filt = self._filter()
        parts: list[str] = []
        async for chunk in self.backend.astream(plan.messages, **self._options(plan, options)):
            out = filt.feed(chunk) if filt else chunk
            if out:
                parts.append(out)
                yield out
            if filt and filt.stopped:
                break
        tail = filt.finish() if filt else ""
        if tail:
            parts.append(tail)
            yield tail
        if history is None:
            self._commit(plan, filt.text if filt else "".join(parts))

    async def achat(self, text: str | None = None, role: str | None = None, *,
                    history: Sequence[Turn] | None = None, **options: Any) -> str:
        """Async twin of ``chat``."""
        return "".join([chunk async for chunk in self.astream(text, role, history=history, **options)])

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
