"""``GroupChat``: several characters and the user in one conversation, each speaker grounded in its own scenes.

    group = GroupChat(["haruhi", "wukong"], llm="openai", user_role="阿虚")
    for said in group.chat("大家好，今天去哪儿？"):
        print(said.speaker, said.text)

Who answers a message is the turn order's call (turn_order.py). Each speaker's prompt is its own chatbot's: its
own system prompt and its own scenes, retrieved for the round so far under its own budget; the shared
conversation rendered with every speaker's name (its own lines as the assistant's, everyone else's as the
user's); a line naming who else is present. Nothing of another character's prompt or scenes is in it. Its
reply is cut where it starts speaking for someone else. All members share one backend (one model and its cache
on a local runtime) and one embedder. Each member remembers the rounds it was present for (members.py reads
the rounds as its history and its memory, memory.py). Rounds are committed when the last speaker of the round is
done (or the stream stops: the replies that finished stay). A group of one is a one-to-one chat: the same prompts,
stored the same way.
"""

from __future__ import annotations

import os
import random
from typing import Any, Iterable, Iterator, Sequence

from ..backends.registry import resolve_backend
from ..character.discovery import find_character
from ..character.folder import Character, load_character
from ..config import DEFAULT_GROUP_REPLIES, DEFAULT_TOP_K, GROUP_ORDERS, MAX_GROUP_SIZE
from ..errors import InputError, UnknownOption
from ..options import parameter_names
from ..retrieval.embeddings import get_embedder
from ..retrieval.index import query_window
from ..sessions import open_session
from ..types import Round, Said, Trace
from .chatbot import Chatbot
from .members import GroupMemory, Member
from .reply import Plan, Reply
from .rounds import Rounds, group_key, members_of
from .saved import group_data, read_group_file, write_saved
from .turn_order import Speaker, TurnOrder


class Speaking:
    """One character's reply as the group streams it: iterate it for chunks (or ``text()``)."""

    def __init__(self, speaker: str, display_name: str, reply: Reply):
        self.speaker, self.display_name, self.reply = speaker, display_name, reply

    def __iter__(self) -> Iterator[str]:
        return iter(self.reply)

    def text(self) -> str:
        """The whole reply."""
        return self.reply.text()

    def __repr__(self) -> str:
        return f"Speaking({self.speaker!r})"


class GroupChat:
    """A conversation between the user and several characters."""

    def __init__(
        self,
        characters: Sequence[str | os.PathLike | Character] | None = None,
        llm: Any = None,
        embedder: Any = None,
        characters_dir: Any = None,
        *,
        user_role: str | None = None,
        order: str = "natural",
        max_replies: int = DEFAULT_GROUP_REPLIES,
        talkativeness: dict[str, float] | None = None,
        seed: int | None = None,
        muted: Iterable[str] = (),
        session: Any = None,
        sessions: Any = None,
        memory: bool = True,
        summarize: bool = False,
        memory_tokens: int | None = None,
        top_k: int = DEFAULT_TOP_K,
        story_tokens: int | None = None,
        history_tokens: int | None = None,
        context_window: int | None = None,
        reply_reserve: int | None = None,
        postprocess: bool = True,
        persona: Any = None,
        vector_cache: Any = None,
        **llm_options: Any,
    ):
        """``characters``: names, aliases, folders or loaded ``Character``s (1 to ``MAX_GROUP_SIZE``); left out to
        resume ``session``. ``order``: "natural", "list" or "manual" (turn_order.py); ``max_replies``: replies to one
        message, at most; ``talkativeness``: {name: 0..1} over the characters' own; ``seed``: makes who speaks
        reproducible. The other keywords are the ``Chatbot``'s, for every member; ``llm_options`` go to the one
        backend they share."""
        store, saved = open_session(session, sessions)
        characters = _given(members_of(store, saved, characters) if saved is not None else characters)
        try:
            self.backend = resolve_backend(llm, **llm_options)
        except UnknownOption as exc:
            own = parameter_names(GroupChat.__init__)[0]
            raise UnknownOption(exc.name, "GroupChat()", [*exc.valid, *own],
                                hint=f"(keywords the group does not know go to the backend: {exc})") from None
        self.embedder = get_embedder(embedder)
        self._settings = {"top_k": top_k, "story_tokens": story_tokens, "history_tokens": history_tokens,
                          "memory_tokens": memory_tokens, "context_window": context_window,
                          "reply_reserve": reply_reserve, "postprocess": postprocess, "persona": persona,
                          "vector_cache": vector_cache}
        self.characters_dir, self._memory_on, self._summarize = characters_dir, memory, summarize
        if summarize and not memory:
            raise InputError("summarize=True needs memory=True: the summary is part of the conversation's memory")
        loaded = self._loaded(characters)
        names = [c.name for c in loaded]
        self.user_role = (user_role or (saved.user_role if saved else None) or loaded[0].user_role or "user").strip()
        self._members: dict[str, Member] = {}
        self._tags: dict[str, str] = {}  # every character that spoke here: its speaker tag
        for character in loaded:
            self._join(character)
        self._talkativeness = self._checked_talkativeness(talkativeness or {})
        self.order = TurnOrder(self._speakers(), order=order, max_replies=max_replies,
                               seed=random.randrange(2**32) if seed is None else seed)
        self._muted: set[str] = set()
        for name in muted:
            self.mute(name)
        self.dialogue = Rounds(self._transcript, store=store, session=saved, key=group_key(names),
                               user_role=self.user_role)
        self.memory = GroupMemory(self._members, self._member, self._link) if memory else None
        self.last_traces: dict[str, Trace] = {}
        if saved is not None:
            self.dialogue.reload()
            for member in self._members.values():
                if member.memory is not None:
                    member.memory.load()

    # -- set-up --------------------------------------------------------------------------------------
    def _loaded(self, characters: Sequence[str | os.PathLike | Character]) -> list[Character]:
        """The members' characters, loaded; one named twice (by any of its names) is an error."""
        loaded = [self._load(c) for c in characters]
        names = [c.name for c in loaded]
        for name in names:
            if names.count(name) > 1:
                raise InputError(f"{name!r} is in the group twice (names and aliases of one character count once)")
        return loaded

    def _load(self, spec: str | os.PathLike | Character) -> Character:
        if isinstance(spec, Character):
            return spec
        if isinstance(spec, os.PathLike):
            return load_character(spec)
        if not isinstance(spec, str) or not spec.strip():
            raise InputError(f"not a character: {spec!r}; give a name such as 'haruhi', or a folder")
        return find_character(spec.strip(), self.characters_dir)

    def _join(self, character: Character) -> Member:
        bot = Chatbot(character=character, llm=self.backend, embedder=self.embedder, user_role=self.user_role,
                      memory=False, **self._settings)
        memory = bot.new_memory(self._link, summarize=self._summarize) if self._memory_on else None
        member = Member(bot, memory)
        self._members[character.name] = member
        self._tags[character.name] = character.speaker
        return member

    def _speakers(self) -> list[Speaker]:
        return [Speaker.of(m.bot.character, self._talkativeness.get(m.name)) for m in self._members.values()]

    def _checked_talkativeness(self, given: dict[str, float]) -> dict[str, float]:
        out = {}
        for name, level in given.items():
            member = self._member(name)
            if not isinstance(level, (int, float)) or not 0 <= level <= 1:
                raise InputError(f"talkativeness[{name!r}]={level!r}: use a number from 0 (never unasked) to 1")
            out[member.name] = float(level)
        return out

    def _member(self, name: str) -> Member:
        """A member by name or alias; anyone else is an error naming the members."""
        if isinstance(name, str):
            if name in self._members:
                return self._members[name]
            for m in self._members.values():
                c = m.bot.character
                if name.strip().casefold() in {n.casefold() for n in (c.display_name, c.speaker, *c.aliases)}:
                    return m
        raise InputError(f"{name!r} is not in this group ({', '.join(self._members)}): add it first "
                         f"(group.add({name!r}))")

    def member_name(self, name: str) -> str:
        """The name of the member ``name`` (a name, display name, speaker tag or alias) stands for."""
        return self._member(name).name

    def _link(self, create: bool) -> Any:
        if self.dialogue.store is None:
            return None
        session_id = self.dialogue.ensure_session() if create else self.dialogue.session_id
        return (self.dialogue.store, session_id) if session_id else None

    # -- who is here ---------------------------------------------------------------------------------
    @property
    def characters(self) -> list[str]:
        """The members' names, in order."""
        return list(self._members)

    @property
    def bots(self) -> dict[str, Chatbot]:
        """Each member's chatbot (its prompt, index and budget), by name."""
        return {name: m.bot for name, m in self._members.items()}

    @property
    def muted(self) -> set[str]:
        """The members who speak only when asked by name (``speakers=``)."""
        return set(self._muted)

    def mute(self, name: str) -> None:
        """Keep a member from speaking unless asked by name; it still hears everything."""
        self._muted.add(self._member(name).name)

    def unmute(self, name: str) -> None:
        """Let a muted member speak again."""
        self._muted.discard(self._member(name).name)

    def set_order(self, order: str) -> None:
        """Change the turn order: "natural", "list" or "manual" (turn_order.py)."""
        if order not in GROUP_ORDERS:
            raise UnknownOption(order, "order=", GROUP_ORDERS, kind="value")
        self.order.order = order

    def add(self, character: str | os.PathLike | Character) -> str:
        """A character joins (it remembers the rounds from now on); returns its name."""
        loaded = self._load(character)
        if loaded.name in self._members:
            raise InputError(f"{loaded.name!r} is in the group already")
        if len(self._members) >= MAX_GROUP_SIZE:
            raise InputError(f"a group holds at most {MAX_GROUP_SIZE} characters: remove one first")
        member = self._join(loaded)
        if self.memory is not None and member.memory is not None:
            for fact in self.memory.facts:
                if fact.character == "":
                    member.memory.adopt(fact)
        self.order.set_speakers(self._speakers())
        return loaded.name

    def remove(self, name: str) -> None:
        """A member leaves (its lines stay in the conversation)."""
        member = self._member(name)
        if len(self._members) == 1:
            raise InputError("a group needs one character at least")
        del self._members[member.name]
        self._muted.discard(member.name)
        self.order.set_speakers(self._speakers())

    # -- the conversation ----------------------------------------------------------------------------
    @property
    def history(self) -> list[Round]:
        """The committed rounds, oldest first (a copy)."""
        return self.dialogue.rounds

    @property
    def session(self) -> Any:
        """The stored conversation (None before the first round, or without a store)."""
        return self.dialogue.session

    def stream(self, text: str | None = None, *, speakers: Sequence[str] | None = None, role: str | None = None,
               history: Sequence[Round] | None = None, **options: Any) -> Iterator[Speaking]:
        """Start a round: yields one ``Speaking`` per speaker, in order (iterate each for its chunks; one left
        unread is read to the end before the next speaker starts). ``speakers`` names who speaks ("let X speak",
        muted or not; with no ``text``, they go on unprompted). ``history``: the round runs on that conversation
        (a stateless caller's, such as the HTTP server's) and nothing is committed; each member then remembers
        what it holds."""
        text = text.strip() if isinstance(text, str) else text
        if text is not None and not isinstance(text, str):
            raise InputError(f"the message must be text, not {type(text).__name__}")
        if not text and not speakers:
            raise InputError("empty message: type something, or name who speaks (speakers=['haruhi'])")
        if isinstance(speakers, str):
            speakers = [speakers]
        user_role = ((role or self.user_role).strip() or self.user_role) if text else ""
        present = tuple(self._members)
        rounds = self.dialogue.rounds if history is None else list(history)
        if speakers:
            queue = [self._member(n).name for n in speakers][: self.order.max_replies]
        else:
            last = rounds[-1].replies[-1].speaker if rounds and rounds[-1].replies else None
            queue = self.order.plan(text, len(rounds), last=last, muted=self._muted)
        return self._round(text or "", user_role, queue, present, dict(options), chained=not speakers,
                           rounds=None if history is None else rounds)

    def chat(self, text: str | None = None, *, speakers: Sequence[str] | None = None, role: str | None = None,
             history: Sequence[Round] | None = None, **options: Any) -> list[Said]:
        """One round: who spoke and what, in order."""
        out = []
        rounds = self.stream(text, speakers=speakers, role=role, history=history, **options)
        try:
            for speaking in rounds:
                out.append(Said(speaking.speaker, speaking.text()))
        finally:
            rounds.close()
        return out

    def _round(self, text: str, user_role: str, queue: list[str], present: tuple[str, ...],
               options: dict[str, Any], chained: bool, rounds: list[Round] | None) -> Iterator[Speaking]:
        """The round's speakers in turn; ``rounds``: a caller's conversation (None: the group's own, committed)."""
        replies: list[Said] = []
        traces: dict[str, Trace] = {}
        own = rounds is None
        try:
            while queue:
                name = queue.pop(0)
                member = self._members[name]
                plan = self._plan(member, Round(user_role, text, tuple(replies), present), rounds)
                done: list[str] = []
                reply = Reply(self.backend, plan, member.bot.call_options(plan, dict(options)),
                              filter=member.bot.reply_filter, commit=lambda _plan, said, done=done: done.append(said))
                yield Speaking(name, member.bot.character.display_name, reply)
                if not reply.started:
                    reply.text()
                if not done:  # the consumer stopped mid-reply: the round ends with what was finished
                    break
                replies.append(Said(name, done[0]))
                traces[name] = plan.trace
                if own:
                    member.window = [t.id for t in plan.trace.turns if t.included]
                if chained:
                    queue = self.order.after(done[0], name, queue, len(replies), muted=self._muted)
        finally:
            if replies and own:
                self._commit(Round(user_role, text, tuple(replies), present), traces)

    def _commit(self, rnd: Round, traces: dict[str, Trace]) -> None:
        self.dialogue.commit(rnd, {name: t.as_dict() for name, t in traces.items()})
        self.last_traces = dict(traces)
        key = query_window(rnd.text or rnd.replies[0].text)
        for name in rnd.present:
            member = self._members.get(name)
            if member is not None:
                member.round_done(key, len(self.dialogue))

    # -- one speaker's prompt ------------------------------------------------------------------------
    def _plan(self, member: Member, current: Round, history: list[Round] | None = None) -> Plan:
        """``member``'s prompt for its turn in the round ``current`` (what was said in it so far), after the
        group's rounds (or a caller's ``history``: then its memory is what that history holds)."""
        others = [self._members[n].bot.character for n in current.present if n != member.name and n in self._members]
        rounds = self.dialogue.rounds if history is None else history
        return member.plan(current, rounds, others, self._tags, user_role=current.user_role or self.user_role,
                           own=history is None)

    def _transcript(self, rnd: Round) -> str:
        """A round's replies as its stored turn reads (a group of one: the reply itself, as a one-to-one chat)."""
        if len(rnd.present) == 1:
            return "\n".join(s.text for s in rnd.replies)
        lines = []
        for said in rnd.replies:
            member = self._members.get(said.speaker)
            tag = self._tags.get(said.speaker, said.speaker)
            lines.append(member.bot.prompt.line(tag, said.text) if member else f"{tag}:「{said.text}」")
        return "\n".join(lines)

    # -- editing -------------------------------------------------------------------------------------
    def undo(self) -> Round:
        """Delete the last round and return it."""
        rnd = self.dialogue.undo()
        self.last_traces = {}
        return rnd

    def reset(self) -> None:
        """Forget the conversation (with a store, the next round starts a new session; the old one is kept)."""
        self.dialogue.reset()
        self.last_traces = {}
        for member in self._members.values():
            member.window = []
            if member.memory is not None:
                member.memory = member.bot.new_memory(self._link, summarize=self._summarize)

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the conversation to a JSON file (atomically), with its pinned facts."""
        write_saved(path, group_data(self.characters, self.user_role, self.history,
                                     self.memory.facts if self.memory else []))

    @classmethod
    def load(cls, path: str | os.PathLike, **kwargs: Any) -> "GroupChat":
        """Resume a conversation saved with ``save``; keyword arguments configure the new group."""
        data, rounds, facts = read_group_file(path)
        kwargs.setdefault("characters", data["characters"])
        kwargs.setdefault("user_role", data.get("user_role"))
        group = cls(**kwargs)
        group.dialogue.replace(rounds)
        if group.memory is not None:
            for fact in facts:
                group.memory.restore(fact)
        return group


def _given(characters: Any) -> list:
    """The characters asked for, as a list of 1 to ``MAX_GROUP_SIZE``."""
    if not characters:
        raise InputError("no characters given: pass GroupChat(['haruhi', 'wukong'], ...)")
    if isinstance(characters, (str, os.PathLike, Character)):
        characters = [characters]
    if len(characters) > MAX_GROUP_SIZE:
        raise InputError(f"a group holds at most {MAX_GROUP_SIZE} characters; {len(characters)} were given: "
                         "leave some out (each one answers with its own prompt and index)")
    return characters
