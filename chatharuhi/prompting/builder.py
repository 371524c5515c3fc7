"""A character's prompt for each turn: the persona and lorebooks, the layout and story reuse, ``pack()`` under the
budget.

The chatbot owns one ``PromptBuilder``; it holds everything about how a turn reads to the model, and nothing about
retrieval, the backend's call or the history's storage.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from ..character.folder import Character, own_file
from ..config import (
    DEFAULT_HISTORY_TOKENS,
    DEFAULT_LORE_TOKENS,
    DEFAULT_MEMORY_TOKENS,
    DEFAULT_REPLY_RESERVE,
    DEFAULT_STORY_TOKENS,
    STORY_FRESH_SHARE,
    STORY_REUSE_MIN_TOKENS,
)
from ..errors import InputError
from ..types import PartTrace, Turn
from .packing import Budget, HistoryTurn, LoreUnit, MemoryUnit, Packed, SceneUnit, pack
from .persona import Persona, fill_macros
from .reuse import StoryMemory, relevant
from .story import StoryUnits
from .templates import PromptSet, load_template
from .tokens import TokenCounter


def budget_for(context_window: int, hint: dict[str, int], *, reply_reserve: int | None = None,
               story_tokens: int | None = None, history_tokens: int | None = None, lore_tokens: int | None = None,
               memory_tokens: int | None = None) -> Budget:
    """How a model's window is shared: each share as given, else the backend's ``hint`` (small local models want a
    short prompt), else the default."""
    return Budget(
        context_window,
        reply_reserve if reply_reserve is not None else hint.get("reply_reserve", DEFAULT_REPLY_RESERVE),
        story_tokens if story_tokens is not None else hint.get("story_tokens", DEFAULT_STORY_TOKENS),
        history_tokens if history_tokens is not None else hint.get("history_tokens", DEFAULT_HISTORY_TOKENS),
        lore_tokens if lore_tokens is not None else DEFAULT_LORE_TOKENS,
        memory_tokens if memory_tokens is not None else hint.get("memory_tokens", DEFAULT_MEMORY_TOKENS),
    )


class PromptBuilder:
    """Packs a turn's scenes, lore, history and message for one character, keeping a cached prefix stable."""

    def __init__(self, character: Character, counter: TokenCounter, budget: Budget, *, user_role: str,
                 persona: Persona | None = None, lorebook: Any = None, lore_tokens: int | None = None,
                 layout: str = "system", story_reuse: bool | None = None):
        """``layout``: the backend's native prompt layout; ``story_reuse``: keep a turn's story for the next while
        it serves (None: when the layout is ``stable_story`` and the story budget is large enough)."""
        self.character, self.counter, self.budget = character, counter, budget
        self.prompts = PromptSet.load(character.language, examples=character.manifest.examples)
        self.header = self.prompts.story_header.render(character=character.display_name)
        self._setup_persona(persona, user_role)
        self._setup_lore(lorebook, lore_tokens)
        self.layout, self.stories = self._story_layout(layout, story_reuse)
        self.scenes = StoryUnits(self.prompts, character, self.user_name, counter, self.header)
        self.memory_header = load_template("memory_header", character.language).text
        self.presence = ""  # a group chat's line naming who else is present (see ``presence_line``)

    # -- set-up --------------------------------------------------------------------------------------
    def _setup_persona(self, persona: Persona | None, user_role: str) -> None:
        """The user's persona: its name is the default user role and fills ``{{user}}``; its description joins
        the system prompt."""
        c = self.character
        self.persona = persona
        self.user_role = persona.name.strip() if persona is not None and user_role == c.user_role else user_role
        self.user_name = persona.name.strip() if persona is not None else self.user_role
        prompt = fill_macros(c.system_prompt, c.display_name, self.user_name)
        if persona is not None and persona.description.strip():
            block = load_template("persona", c.language).render(name=self.user_name,
                                                                 description=persona.description.strip())
            prompt = prompt.rstrip() + "\n\n" + block.strip()
        self.system_prompt = prompt
        phi = c.manifest.post_history_instructions
        self.post_history = fill_macros(phi, c.display_name, self.user_name).strip() if phi else ""

    def _setup_lore(self, lorebook: Any, lore_tokens: int | None) -> None:
        """The folder's ``lorebook.json`` plus ``lorebook=`` (a path, a ``Lorebook``, or a list of them). A book's
        own ``token_budget`` is its lore share unless ``lore_tokens=`` is given."""
        from .lorebook import load_lorebooks

        c = self.character
        extra = lorebook if isinstance(lorebook, (list, tuple)) else [lorebook]
        own = own_file(Path(c.path), "lorebook.json") if getattr(c, "path", None) else None  # no links out
        self.lorebook = load_lorebooks([own if own is not None and own.is_file() else None, *extra])
        self.lore_header = load_template("lore_header", c.language).text if self.lorebook else ""
        if self.lorebook is not None and self.lorebook.token_budget and lore_tokens is None:
            self.budget = replace(self.budget, lore_tokens=self.lorebook.token_budget)

    def _story_layout(self, native: str, reuse: bool | None) -> tuple[str, StoryMemory | None]:
        """The packing layout, and for a backend that caches the prompt's prefix, the memory of what each turn
        kept (the story with story reuse; else the turn the history starts at)."""
        if reuse not in (None, True, False):
            raise InputError(f"story_reuse={reuse!r}: use None (when the backend asks for it), True or False")
        if reuse is None:
            reuse = native == "stable_story" and self.budget.story_tokens >= STORY_REUSE_MIN_TOKENS
        if reuse:
            return "stable_story", StoryMemory()
        if native in ("stable_story", "stable_prefix"):
            return "stable_prefix", StoryMemory()
        return native, None

    def presence_line(self, others: Sequence[str]) -> str:
        """The line that tells the character who else is present (a group chat); "" when nobody is."""
        if not others:
            return ""
        separator = "、" if self.character.language.lower().startswith("zh") else ", "
        return load_template("group_presence", self.character.language).render(
            others=separator.join(others), character=self.character.display_name)

    # -- lines ---------------------------------------------------------------------------------------
    def line(self, role: str, text: str) -> str:
        """``role:「text」`` in the character's language's line template."""
        return self.prompts.line.render(role=role, text=text)

    def render_turn(self, i: int, turn: Turn) -> HistoryTurn:
        """A committed turn as it reads in the prompt's history."""
        return HistoryTurn(str(i), self.line(turn.user_role, turn.text), self.line(self.character.speaker, turn.reply))

    def query(self, line: str) -> str:
        """The newest message as sent: a card's post-history instructions ride after it."""
        return f"{line}\n\n{self.post_history}" if self.post_history else line

    # -- packing -------------------------------------------------------------------------------------
    def story_units(self, hits: Sequence[Any], text: str, budget: int | None = None
                    ) -> tuple[list[SceneUnit], list[PartTrace]]:
        """The hits as story units for ``budget`` tokens (the story budget): see ``story.StoryUnits``."""
        return self.scenes.units(hits, text, self.budget.story_tokens if budget is None else budget)

    def lore(self, query_line: str, rendered: Sequence[HistoryTurn]) -> list[LoreUnit]:
        """The lorebook entries this turn fires."""
        if self.lorebook is None:
            return []
        messages = [m for h in rendered for m in (h.user, h.assistant)] + [query_line]
        name, user = self.character.display_name, self.user_name
        return [LoreUnit(a.entry.id, fill_macros(a.entry.content, name, user), a.entry.insertion_order, a.key)
                for a in self.lorebook.activate(messages)]

    def pack(self, hits: Sequence[Any], text: str, rendered: list[HistoryTurn], line: str, query: str,
             recall: bool = True, memory: Sequence[MemoryUnit] = ()) -> tuple[Packed, list[PartTrace]]:
        """Pack the turn, with ``memory`` (facts, the summary, recalled turns) under the memory share. For a
        backend that caches the prompt's prefix, keep the turn the previous turn's history started at and, with
        story reuse, its story while they serve (not when ``recall`` is false: a story kept from before could hold
        scenes this turn excludes)."""
        system = f"{self.system_prompt.rstrip()}\n\n{self.presence}" if self.presence else self.system_prompt

        def packed_with(scenes, fresh=(), start=None) -> Packed:
            return pack(system, self.header, scenes, rendered, query, self.counter, self.budget,
                        lore=self.lore(query, rendered), lore_header=self.lore_header, layout=self.layout,
                        history_from=start, fresh_scenes=fresh, memory=memory, memory_header=self.memory_header)

        kept = self.stories.recall(rendered) if self.stories is not None and recall else None
        if self.layout != "stable_story":  # no story reuse; the history still keeps its start when cached
            units, overlapping = self.story_units(hits, text)
            packed = packed_with(units, start=kept.first_turn if kept is not None else None)
            if self.stories is not None:
                self.stories.remember(rendered, line, (), packed)
            return packed, overlapping
        cap = self.budget.story_tokens
        whole, overlapping = self.story_units(hits, text)  # the story a fresh turn would hold
        fresh, _ = self.story_units(hits, text, int(cap * STORY_FRESH_SHARE))
        if kept is not None and relevant(kept.scenes, whole, self.counter, cap):
            packed = packed_with(kept.scenes, fresh, kept.first_turn)
            if [i for i in packed.scene_ids if i not in packed.fresh_ids] == [s.id for s in kept.scenes]:
                packed.trace.story_kept = True
                self.stories.remember(rendered, line, kept.scenes, packed)
                return packed, overlapping
        units, _ = self.story_units(hits, text, cap - int(cap * STORY_FRESH_SHARE))
        packed = packed_with(units, fresh)
        packed.trace.story_kept = False
        self.stories.remember(rendered, line, units, packed)
        return packed, overlapping
