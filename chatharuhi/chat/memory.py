"""A conversation's long-term memory for one character: pinned facts, a rolling summary, and its earlier turns.

Turns that leave the history window are not lost: every turn is an entry of a ``TurnIndex`` (retrieval/turns.py)
and the best matches for the new message come back into the prompt under the memory share of the budget
(packing's ``MemoryUnit``; the packer leaves out those still in the window). An entry's vector is its user
message's query vector, which that turn's own retrieval embedded, so memory needs no extra embedding and no LLM
call. Pinned facts are always in the prompt (a fact that would not fit the memory share is refused with its
size); with ``summarize=True`` a ``Summarizer`` (summary.py) keeps a rolling summary of what left the window.

With a session store, facts, summaries and the messages' vectors are kept with the session (and exported and
deleted with it); a damaged vector row is found when the memory is loaded, and the index is rebuilt from the
stored turns with a warning.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ..config import (
    DEFAULT_DENSE_WEIGHT,
    DEFAULT_DUPLICATE_THRESHOLD,
    DEFAULT_LEXICAL_WEIGHT,
    MEMORY_REPEATS,
    MEMORY_TOP_K,
)
from ..errors import BudgetError, InputError
from ..prompting.packing import MemoryUnit
from ..prompting.templates import load_template
from ..retrieval.index import query_window
from ..retrieval.turns import TurnIndex, key_hash, query_vectors, read_vector, vector_bytes
from ..types import Fact, PartTrace, Trace, Turn

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..prompting.packing import HistoryTurn
    from ..prompting.tokens import TokenCounter
    from ..retrieval.embeddings import Embedder
    from ..sessions import SessionStore
    from .history import History

# ``link(create)``: the store and session the memory is kept in (creating the session when asked), or None.
Link = Callable[[bool], "tuple[SessionStore, str] | None"]


@dataclass(frozen=True)
class Entry:
    """A turn as memory holds it."""

    id: str  # unique in the conversation
    key: str  # the text its vector embeds: the user's message, as that turn's retrieval embedded it
    text: str  # how it reads in the prompt (its lines)
    words: str  # what the lexical score reads
    turns: tuple[str, ...]  # the rendered history turns it repeats
    order: int  # its place in the conversation


class Memory:
    """Pinned facts, a summary and the searchable earlier turns of one conversation, for one character."""

    def __init__(self, embedder: "Embedder", counter: "TokenCounter", budget: Callable[[], int], *,
                 language: str = "zh", character: str = "", link: Link | None = None, top_k: int = MEMORY_TOP_K,
                 dense_weight: float = DEFAULT_DENSE_WEIGHT, lexical_weight: float = DEFAULT_LEXICAL_WEIGHT,
                 summarize_with: "Backend | None" = None, names: tuple[str, str] = ("", ""),
                 embed_missing: bool = True):
        """``budget()``: the memory share in tokens now; ``link``: where facts and vectors are kept (see ``Link``);
        ``summarize_with``: the backend that writes the rolling summary (None: no summary), ``names`` the
        character's and the user's in it; ``embed_missing``: embed a message whose vector is neither remembered
        nor stored (False: lexical only)."""
        from .summary import Summarizer

        self.embedder, self.counter, self.budget = embedder, counter, budget
        self.character, self.link, self.top_k = character, link, top_k
        self.weights = {"dense_weight": dense_weight, "lexical_weight": lexical_weight}
        self.embed_missing = embed_missing
        self.summarizer = None if summarize_with is None else Summarizer(
            summarize_with, counter, language, names, on_summary=self.set_summary, on_note=self.note)
        self.header = load_template("memory_header", language).text
        self._fact_template = load_template("memory_fact", language)
        self._summary_template = load_template("memory_summary", language)
        self._facts: list[Fact] = []
        self._summary: tuple[str, int] | None = None
        self._notes: list[str] = []
        self._entries: list[Entry] = []
        self._sources: list[object] = []  # what each entry was made from (a Turn, a group round): sync compares them
        self._index = TurnIndex(embedder.dim)
        self._stored: dict[str, np.ndarray] = {}
        self._lock = threading.RLock()

    # -- what it holds -----------------------------------------------------------------------------
    @property
    def facts(self) -> list[Fact]:
        """The pinned facts, oldest first (a copy)."""
        with self._lock:
            return list(self._facts)

    @property
    def summary(self) -> str | None:
        """The rolling summary of what left the window, if one was written."""
        with self._lock:
            return self._summary[0] if self._summary else None

    @property
    def summarized(self) -> int:
        """How many of the conversation's first turns the summary covers."""
        with self._lock:
            return self._summary[1] if self._summary else 0

    @property
    def entries(self) -> list[Entry]:
        """The conversation's turns as memory holds them (a copy)."""
        with self._lock:
            return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    # -- pinned facts --------------------------------------------------------------------------------
    def _fact_unit(self, text: str, user: str = "{user}") -> str:
        return self._fact_template.render(user=user, fact=text.strip())

    def check_fact(self, text: str, replacing: str | None = None) -> None:
        """Refuse (``BudgetError``, with its size) a fact that would not fit the memory share beside the others."""
        if not isinstance(text, str) or not text.strip():
            raise InputError("empty fact: type what the character should remember")
        budget = self.budget()
        cost = self.counter.count(self._fact_unit(text).strip() + "\n")
        others = sum(self.counter.count(self._fact_unit(f.text).strip() + "\n") for f in self.facts
                     if f.id != replacing)
        used = others + self.counter.count(self.header.strip() + "\n")
        if used + cost > budget:
            raise BudgetError(f"the fact is {cost} tokens, but only {max(0, budget - used)} of the memory budget "
                              f"({budget} tokens) are free beside the facts already pinned: shorten it, unpin a fact, "
                              "or raise memory_tokens", part="memory", tokens=cost, budget=max(0, budget - used))

    def pin(self, text: str, character: str = "") -> Fact:
        """Pin a fact: it is in every prompt of this conversation from now on (for ``character`` only, in a group)."""
        self.check_fact(text)
        text = text.strip()
        where = self.link(True) if self.link is not None else None
        with self._lock:
            fact = where[0].add_fact(where[1], text, character) if where else Fact(self._next_id(), text, character)
            self._facts.append(fact)
        return fact

    def adopt(self, fact: Fact) -> None:
        """Hold a fact pinned elsewhere (a group's fact for everyone, stored once)."""
        with self._lock:
            self._facts.append(fact)

    def _next_id(self) -> str:
        return str(1 + max((int(f.id) for f in self._facts if f.id.isdigit()), default=0))

    def _fact(self, fact_id: str) -> Fact:
        for fact in self._facts:
            if fact.id == str(fact_id):
                return fact
        listing = ", ".join(f"{f.id} ({f.text[:20]})" for f in self._facts) or "none"
        raise InputError(f"no pinned fact {fact_id!r}; the facts are: {listing}")

    def edit(self, fact_id: str, text: str, *, store: bool = True) -> Fact:
        """Replace a pinned fact's text (checked against the budget like a new one)."""
        with self._lock:
            old = self._fact(fact_id)
            self.check_fact(text, replacing=old.id)
            where = self.link(False) if self.link is not None and store else None
            new = where[0].edit_fact(where[1], old.id, text.strip()) if where else Fact(old.id, text.strip(),
                                                                                        old.character)
            self._facts[self._facts.index(old)] = new
            return new

    def forget(self, fact_id: str, *, store: bool = True) -> Fact:
        """Unpin a fact; returns it."""
        with self._lock:
            fact = self._fact(fact_id)
            where = self.link(False) if self.link is not None and store else None
            if where:
                where[0].delete_fact(where[1], fact.id)
            self._facts.remove(fact)
            return fact

    # -- the summary ---------------------------------------------------------------------------------
    def set_summary(self, text: str, upto: int) -> None:
        """Keep a new rolling summary covering the first ``upto`` turns (written by the summarizer)."""
        where = self.link(False) if self.link is not None else None
        if where:
            where[0].set_summary(where[1], self.character, text, upto)
        with self._lock:
            self._summary = (text, upto)

    def note(self, text: str) -> None:
        """Something the next turn's trace should say (a summary that failed or timed out)."""
        with self._lock:
            self._notes.append(text)

    # -- the store -----------------------------------------------------------------------------------
    def load(self) -> None:
        """Read facts, the summary and the messages' vectors from the session (after resuming it)."""
        where = self.link(False) if self.link is not None else None
        if not where:
            return
        store, session_id = where
        facts = [f for f in store.facts(session_id) if f.character in ("", self.character)]
        summary = store.summaries(session_id).get(self.character)
        stored, bad = {}, 0
        blobs = store.memory_vectors(session_id, self.embedder.id)
        for digest, blob in blobs.items():
            vector = read_vector(blob, self.embedder.dim)
            if vector is None:
                bad += 1
            else:
                stored[digest] = vector
        if bad:
            warnings.warn(f"the memory index of session {session_id} is damaged ({bad} of {len(blobs)} vectors "
                          "unreadable); rebuilding it from the stored turns", RuntimeWarning, stacklevel=3)
            store.clear_memory_vectors(session_id, self.embedder.id)
            stored = {}
        with self._lock:
            self._facts, self._summary, self._stored = facts, summary, stored
            self._entries, self._sources = [], []
            self._index = TurnIndex(self.embedder.dim)

    def keep_vector(self, key: str) -> None:
        """Store the vector of a committed turn's message with the session (from the memo: no embedding)."""
        where = self.link(False) if self.link is not None else None
        vector = query_vectors.get(self.embedder.id, key)
        if not where or vector is None or key_hash(key) in self._stored:
            return
        self._save(where, {key_hash(key): vector})

    def _save(self, where: "tuple[SessionStore, str]", vectors: dict[str, np.ndarray]) -> None:
        try:
            where[0].add_memory_vectors(where[1], self.embedder.id,
                                        {h: vector_bytes(v) for h, v in vectors.items()})
        except Exception as exc:  # noqa: BLE001 - derived data: a failed write only costs a re-embedding later
            warnings.warn(f"could not store the memory index: {exc}", RuntimeWarning, stacklevel=3)
            return
        with self._lock:
            self._stored.update(vectors)

    # -- the index -----------------------------------------------------------------------------------
    def sync(self, sources: Sequence[object], entry: Callable[[int, object], Entry]) -> None:
        """Make the index hold the conversation ``sources`` (turns, rounds): entries are made (``entry(i, source)``)
        for new ones only; a conversation cut back (undo, an edit) drops what changed."""
        with self._lock:
            n = 0
            common = min(len(sources), len(self._sources))
            while n < common and (sources[n] is self._sources[n] or sources[n] == self._sources[n]):
                n += 1
            if n < len(self._entries):
                self._index.truncate(n)
                del self._entries[n:], self._sources[n:]
            fresh = [entry(i, sources[i]) for i in range(n, len(sources))]
            if not fresh:
                return
            vectors, missing = self._vectors([e.key for e in fresh])
            for e, vector in zip(fresh, vectors):
                self._index.add(e.id, e.words, vector)
            self._entries += fresh
            self._sources += list(sources[n:])
        where = self.link(False) if missing and self.link is not None else None
        if where:
            self._save(where, missing)

    def _vectors(self, keys: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Vectors for ``keys``: remembered, stored, else embedded (when allowed; zero: lexical only); and those
        that were not stored yet."""
        out = np.zeros((len(keys), self.embedder.dim), dtype=np.float32)
        missing: dict[str, np.ndarray] = {}
        todo = []
        for i, key in enumerate(keys):
            digest = key_hash(key)
            vector = query_vectors.get(self.embedder.id, key)
            if vector is None:
                vector = self._stored.get(digest)
            if vector is None:
                todo.append(i)
                continue
            out[i] = vector
            if digest not in self._stored:
                missing[digest] = vector
        if todo and self.embed_missing:
            for i in todo:
                vector = np.asarray(self.embedder.embed_query(keys[i]), dtype=np.float32)
                query_vectors.put(self.embedder.id, keys[i], vector)
                out[i] = missing[key_hash(keys[i])] = vector
        return out, missing

    def recall(self, text: str, vector: np.ndarray | None, *, user: str, exclude: Sequence[str] = ()
               ) -> list[MemoryUnit]:
        """The memory units for a message: pinned facts, the summary, then the best earlier turns (budget order).

        ``exclude``: entry ids surely still in the history window (they would only be left out again)."""
        with self._lock:
            units = [MemoryUnit(f"fact:{f.id}", self._fact_unit(f.text, user), "fact", order=-2) for f in self._facts]
            if self._summary:
                units.append(MemoryUnit("summary", self._summary_template.render(summary=self._summary[0]),
                                        "summary", order=-1))
            by_id, others = {e.id: e for e in self._entries}, 0
            for hit in self._index.search(text, vector, self.top_k + MEMORY_REPEATS, exclude=exclude, **self.weights):
                repeat = hit.dense >= DEFAULT_DUPLICATE_THRESHOLD  # the same message asked before: no slot of its own
                if not repeat and others >= self.top_k:
                    continue
                others += not repeat
                e = by_id[hit.id]
                units.append(MemoryUnit(f"turn:{e.id}", e.text, "recalled", e.turns, round(hit.score, 4), e.order))
            return units

    def notes(self) -> list[PartTrace]:
        """What happened since the last turn that its trace should say (then forgotten)."""
        if self.summarizer is not None:
            self.summarizer.check()
        with self._lock:
            notes, self._notes = self._notes, []
        return [PartTrace("summary", 0, False, note, key="note") for note in notes]

    def turn_done(self, window_start: int) -> None:
        """A turn was committed and the window now starts at turn ``window_start``: summarize what left it, maybe."""
        if self.summarizer is not None:
            with self._lock:
                entries, upto = list(self._entries), self.summarized
                previous = self.summary
            self.summarizer.maybe_start(entries, upto, window_start, previous)


class ChatMemory:
    """A chatbot's memory of its own conversation (a new one after a reset) and the turns its last prompt held;
    which memory a turn reads, and what a committed turn leaves in it."""

    def __init__(self, make: Callable[..., Memory], history: "History", render: Callable[[int, Turn], "HistoryTurn"],
                 *, on: bool, summarize: bool):
        """``make(link, summarize=, embed_missing=)``: a new memory (``Chatbot.new_memory``); ``history``: the
        conversation it remembers; ``render``: a turn as the prompt reads it; ``on``: False for none at all."""
        self._make, self._history, self._render, self._summarize = make, history, render, summarize
        self.current: Memory | None = make(self.link, summarize=summarize) if on else None
        self.window: list[str] = []  # the history turns the last prompt held

    def link(self, create: bool) -> "tuple[SessionStore, str] | None":
        """Where the memory is kept: the conversation's session (started now, when ``create``, if none yet)."""
        if self._history.store is None:
            return None
        session_id = self._history.ensure_session() if create else self._history.session_id
        return (self._history.store, session_id) if session_id else None

    def entry(self, i: int, turn: Turn) -> Entry:
        """A turn as the memory holds it."""
        lines = self._render(i, turn)
        return Entry(str(i), query_window(turn.text), f"{lines.user}\n{lines.assistant}",
                     f"{turn.text}\n{turn.reply}", (str(i),), i)

    def for_turn(self, turns: Sequence[Turn], *, own: bool,
                 given: Memory | None) -> tuple[Memory | None, Sequence[str]]:
        """The memory a turn after ``turns`` reads, synced with them, and the turns it leaves out (still in the
        window). ``own``: they are the chatbot's conversation; ``given``: the memory of a caller's conversation;
        else, for a caller's own turns, one recalled from them alone (from vectors already made, else lexically)."""
        memory, remembered = None, ()
        if given is not None:
            memory = given
        elif self.current is not None:
            if own:
                memory, remembered = self.current, self.window
            else:
                memory = self._make(None, embed_missing=False)
        if memory is not None:
            memory.sync(turns, self.entry)
        return memory, remembered

    def held(self, trace: Trace) -> None:
        """The chatbot's own turn was packed: the history turns its prompt holds are the window now."""
        self.window = [t.id for t in trace.turns if t.included]

    def kept(self, text: str, trace: Trace) -> None:
        """After a commit: keep the message's vector with the session, and maybe summarize what left the window."""
        if self.current is None:
            return
        self.current.keep_vector(query_window(text))
        kept = [int(t.id) for t in trace.turns if t.included and t.id.isdigit()]
        self.current.turn_done(kept[0] if kept else len(trace.turns))

    def reset(self) -> None:
        """A new conversation remembers nothing of the old one."""
        self.window = []
        if self.current is not None:
            self.current = self._make(self.link, summarize=self._summarize)

    def of_session(self, store: "SessionStore", session_id: str) -> Memory:
        """The memory of one of the character's stored conversations (its facts, summary and vectors), loaded."""
        memory = self._make(lambda create: (store, session_id))
        memory.load()
        return memory
