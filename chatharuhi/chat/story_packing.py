"""How a chatbot packs a turn's story: the prompt layout, and for a backend that caches the prompt's prefix,
the story and history start kept across turns (reuse.py) (mixed into ``ChatHaruhi``)."""

from __future__ import annotations

from typing import Any, Sequence

from ..config import STORY_FRESH_SHARE, STORY_REUSE_MIN_TOKENS
from ..errors import InputError
from ..prompting.packing import HistoryTurn, Packed, SceneUnit, pack
from ..prompting.reuse import StoryMemory, relevant
from ..types import PartTrace


class StoryPacking:
    """Chooses the layout when ``ChatHaruhi`` is built, and packs each turn's scenes, history and query."""

    def _story_layout(self, reuse: bool | None) -> tuple[str, StoryMemory | None]:
        """The packing layout, and for a backend that caches the prompt's prefix, the memory of what each
        turn kept (the story with story reuse; else the turn the history starts at)."""
        if reuse not in (None, True, False):
            raise InputError(f"story_reuse={reuse!r}: use None (when the backend asks for it), True or False")
        native = getattr(self.backend, "prompt_layout", "system")
        if reuse is None:
            reuse = native == "stable_story" and self.budget.story_tokens >= STORY_REUSE_MIN_TOKENS
        if reuse:
            return "stable_story", StoryMemory()
        if native in ("stable_story", "stable_prefix"):
            return "stable_prefix", StoryMemory()
        return native, None

    def _story_units(self, hits: Sequence[Any], text: str, budget: int | None = None
                     ) -> tuple[list[SceneUnit], list[PartTrace]]:
        """The hits as story units for ``budget`` tokens (the story budget): see ``story.StoryUnits``."""
        return self._scenes.units(hits, text, self.budget.story_tokens if budget is None else budget)

    def _pack(self, hits: Sequence[Any], text: str, rendered: list[HistoryTurn], line: str, query: str,
              recall: bool = True) -> tuple[Packed, list[PartTrace]]:
        """Pack the turn. For a backend that caches the prompt's prefix, keep the turn the previous turn's history
        started at and, with story reuse, its story while they serve (not when ``recall`` is false: a story kept
        from before could hold scenes this turn excludes)."""
        def packed_with(scenes, fresh=(), start=None) -> Packed:
            return pack(self._system_prompt, self._header, scenes, rendered, query, self.counter, self.budget,
                        lore=self._lore(query, rendered), lore_header=self._lore_header, layout=self._layout,
                        history_from=start, fresh_scenes=fresh)

        kept = self._stories.recall(rendered) if self._stories is not None and recall else None
        if self._layout != "stable_story":  # no story reuse; the history still keeps its start when cached
            units, overlapping = self._story_units(hits, text)
            packed = packed_with(units, start=kept.first_turn if kept is not None else None)
            if self._stories is not None:
                self._stories.remember(rendered, line, (), packed)
            return packed, overlapping
        cap = self.budget.story_tokens
        whole, overlapping = self._story_units(hits, text)  # the story a fresh turn would hold
        fresh, _ = self._story_units(hits, text, int(cap * STORY_FRESH_SHARE))
        if kept is not None and relevant(kept.scenes, whole, self.counter, cap):
            packed = packed_with(kept.scenes, fresh, kept.first_turn)
            if [i for i in packed.scene_ids if i not in packed.fresh_ids] == [s.id for s in kept.scenes]:
                packed.trace.story_kept = True
                self._stories.remember(rendered, line, kept.scenes, packed)
                return packed, overlapping
        units, _ = self._story_units(hits, text, cap - int(cap * STORY_FRESH_SHARE))
        packed = packed_with(units, fresh)
        packed.trace.story_kept = False
        self._stories.remember(rendered, line, units, packed)
        return packed, overlapping
