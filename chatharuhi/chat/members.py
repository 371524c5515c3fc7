"""A group's members: each one's chatbot and memory of the group, how the group's rounds read in its prompt, and
the pinned facts they share (``GroupMemory``).

A member's history is the rounds it was present for, cut after each of its own lines: its replies are the
assistant's, everyone else's lines (with their speaker tags) the user's; the lines after its last reply wait, with
no reply, for the next user message. Nothing of another member's prompt or scenes is in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from ..character.folder import Character
from ..errors import InputError
from ..prompting.packing import HistoryTurn
from ..prompting.templates import load_template
from ..retrieval.index import query_window
from ..types import Fact, Round
from .chatbot import Chatbot
from .memory import Entry, Link, Memory
from .reply import Plan


@dataclass
class Member:
    """One character of a group: its chatbot (prompt, index; the group's backend) and its memory of the group."""

    bot: Chatbot
    memory: Memory | None
    window: list[str] = field(default_factory=list)  # the history turns its last prompt held

    @property
    def name(self) -> str:
        """The character's name (its folder's)."""
        return self.bot.character.name

    # -- the rounds as its history reads them ----------------------------------------------------------
    def segments(self, r: int, rnd: Round, tags: dict[str, str]) -> list[HistoryTurn]:
        """Round ``r`` as this member's history reads it (``tags``: each speaker's tag, by name)."""
        line = self.bot.prompt.line
        out: list[HistoryTurn] = []
        waiting = [line(rnd.user_role, rnd.text)] if rnd.text else []
        for said in rnd.replies:
            mine = line(tags.get(said.speaker, said.speaker), said.text)
            if said.speaker != self.name:
                waiting.append(mine)
            elif not waiting and out and out[-1].assistant:  # it went on unprompted: one longer reply
                out[-1] = HistoryTurn(out[-1].id, out[-1].user, f"{out[-1].assistant}\n{mine}")
            else:
                out.append(HistoryTurn(f"{r}" if not out else f"{r}.{len(out)}", "\n".join(waiting), mine))
                waiting = []
        if waiting:
            out.append(HistoryTurn(f"{r}" if not out else f"{r}.{len(out)}", "\n".join(waiting), ""))
        return out

    def rendered(self, rounds: Sequence[Round], tags: dict[str, str]) -> list[HistoryTurn]:
        """The rounds it was present for, as its history."""
        return [h for r, rnd in enumerate(rounds) if self.name in rnd.present for h in self.segments(r, rnd, tags)]

    def entry(self, tags: dict[str, str]) -> Callable[[int, tuple[int, Round]], Entry]:
        """How its memory holds a round (``Memory.sync``'s ``entry``)."""
        def entry(_: int, source: tuple[int, Round]) -> Entry:
            r, rnd = source
            segments = self.segments(r, rnd, tags)
            lines = [part for h in segments for part in (h.user, h.assistant) if part]
            words = "\n".join([rnd.text, *(s.text for s in rnd.replies)])
            return Entry(f"r{r}", query_window(rnd.text or rnd.replies[0].text), "\n".join(lines), words,
                         tuple(h.id for h in segments), r)
        return entry

    # -- its prompt ----------------------------------------------------------------------------------
    def plan(self, current: Round, rounds: Sequence[Round], others: Sequence[Character], tags: dict[str, str], *,
             user_role: str, own: bool) -> Plan:
        """Its prompt for its turn in the round ``current`` (what was said in it so far), after ``rounds``, with
        ``others`` present; ``own``: those are the group's rounds (else a caller's: then its memory is what they
        hold)."""
        bot = self.bot
        bot.others = tuple(dict.fromkeys(n for c in others for n in (c.speaker, c.display_name)))
        bot.prompt.presence = bot.prompt.presence_line([c.display_name for c in others])
        rendered = self.rendered([*rounds, current], tags)
        if rendered and not rendered[-1].assistant and rendered[-1].id.split(".")[0] == str(len(rounds)):
            line = rendered.pop().user  # the round so far, since it last spoke: what it answers
            search = "\n".join([current.text, *(s.text for s in current.replies)]).strip()
        else:  # asked to go on with nothing new said
            line = load_template("group_continue", bot.character.language).render(
                character=bot.character.display_name)
            search = current.replies[-1].text if current.replies else (
                rounds[-1].replies[-1].text if rounds else line)
        memory, remembered = self.memory, ()
        if memory is not None and not own:  # recalled from that conversation alone, no embedding
            memory = bot.new_memory(None, embed_missing=False)
        elif memory is not None:
            remembered = tuple(dict.fromkeys(f"r{t.split('.')[0]}" for t in self.window))
        if memory is not None:
            memory.sync([(r, rnd) for r, rnd in enumerate(rounds) if self.name in rnd.present], self.entry(tags))
        return bot.compose(search, rendered, line, user_role=user_role, text=current.text, memory=memory,
                           remembered=remembered)

    def round_done(self, key: str, rounds: int) -> None:
        """After a round it was present for was committed (``key``: its message's query window; ``rounds``: how
        many the group holds now): keep the vector, and maybe summarize what left its window."""
        if self.memory is None:
            return
        self.memory.keep_vector(key)
        first = min((int(t.split(".")[0]) for t in self.window), default=rounds)
        self.memory.turn_done(sum(1 for e in self.memory.entries if e.order < first))


class GroupMemory:
    """A group's pinned facts: for everyone (stored once) or for one member; each member holds its own memory."""

    def __init__(self, members: dict[str, Member], find: Callable[[str], Member], link: Link):
        """``members``: the group's, by name (kept up to date by the group); ``find``: a member by name or alias;
        ``link``: where the group's conversation is stored."""
        self._members, self._find, self._link = members, find, link

    def of(self, name: str) -> Memory:
        """A member's memory (its facts, summary and the rounds it was present for)."""
        memory = self._find(name).memory
        if memory is None:
            raise InputError("this group was made with memory=False")
        return memory

    def _memories(self) -> list[Memory]:
        return [m.memory for m in self._members.values() if m.memory is not None]

    @property
    def summary(self) -> str | None:
        """The members' rolling summaries, each after its name (None before any was written)."""
        parts = [f"{name}: {m.memory.summary}" for name, m in self._members.items()
                 if m.memory is not None and m.memory.summary]
        return "\n".join(parts) or None

    @property
    def entries(self) -> list[Entry]:
        """The rounds the longest-present member remembers (each member holds those it was present for)."""
        return max((m.entries for m in self._memories()), key=len, default=[])

    @property
    def facts(self) -> list[Fact]:
        """Every pinned fact, oldest first (once each)."""
        seen: dict[str, Fact] = {}
        for memory in self._memories():
            for fact in memory.facts:
                seen.setdefault(fact.id, fact)
        return sorted(seen.values(), key=lambda f: (len(f.id), f.id))

    def pin(self, text: str, character: str | None = None) -> Fact:
        """Pin a fact for everyone (or one member): it is in every prompt of theirs from now on."""
        if character is not None:
            name = self._find(character).name
            return self.of(name).pin(text, character=name)
        memories = self._memories()
        for memory in memories:
            memory.check_fact(text)
        where = self._link(True)
        fact = where[0].add_fact(where[1], text.strip(), "") if where else Fact(self._next_id(), text.strip(), "")
        for memory in memories:
            memory.adopt(fact)
        return fact

    def restore(self, fact: Fact) -> None:
        """Hold a fact read back from a file (stored again if the group has a store)."""
        if fact.character and fact.character in self._members:
            self.of(fact.character).pin(fact.text, character=fact.character)
        elif not fact.character:
            self.pin(fact.text)

    def _next_id(self) -> str:
        return str(1 + max((int(f.id) for f in self.facts if f.id.isdigit()), default=0))

    def _holders(self, fact_id: str) -> list[Memory]:
        holders = [m for m in self._memories() if any(f.id == str(fact_id) for f in m.facts)]
        if not holders:
            listing = ", ".join(f"{f.id} ({f.text[:20]})" for f in self.facts) or "none"
            raise InputError(f"no pinned fact {fact_id!r}; the facts are: {listing}")
        return holders

    def edit(self, fact_id: str, text: str) -> Fact:
        """Replace a pinned fact's text (checked against every holder's memory budget)."""
        holders = self._holders(fact_id)
        for memory in holders:
            memory.check_fact(text, replacing=str(fact_id))
        new = holders[0].edit(fact_id, text)
        for memory in holders[1:]:
            memory.edit(fact_id, text, store=False)
        return new

    def forget(self, fact_id: str) -> Fact:
        """Unpin a fact; returns it."""
        holders = self._holders(fact_id)
        fact = holders[0].forget(fact_id)
        for memory in holders[1:]:
            memory.forget(fact_id, store=False)
        return fact
