"""A turn's retrieved scenes as story units: rendered once, overlapping windows left out, cut to a budget."""

from __future__ import annotations

from typing import Any, Sequence

from ..character.folder import Character
from ..character.windows import best_lines
from ..config import STORY_CAP_MARGIN
from ..types import PartTrace
from .packing import SceneUnit
from .persona import fill_macros
from .templates import PromptSet
from .tokens import TokenCounter


class StoryUnits:
    """Renders a character's scenes with its prompt templates (each scene once) and cuts them to budgets."""

    def __init__(self, prompts: PromptSet, character: Character, user_name: str, counter: TokenCounter,
                 header: str):
        self.prompts, self.character, self.user_name = prompts, character, user_name
        self.counter, self.header = counter, header
        self._rendered: dict[str, str] = {}

    def render(self, text: str) -> str:
        """Scene text as it appears in the story block (macros filled)."""
        return self.prompts.scene.render(scene=fill_macros(text, self.character.display_name, self.user_name))

    def unit(self, scene: Any) -> str:
        """A scene rendered, from the cache after the first time."""
        unit = self._rendered.get(scene.id)
        if unit is None:
            unit = self._rendered[scene.id] = self.render(scene.text)
        return unit

    def units(self, hits: Sequence[Any], text: str, budget: int) -> tuple[list[SceneUnit], list[PartTrace]]:
        """Hits as story units: a window overlapping a better one of the same scene is left out, and one
        larger than ``budget`` is cut to its lines that best match ``text`` (windows.py)."""
        units, overlapping, taken = [], [], {}
        cap = budget - self.counter.count(self.header) - STORY_CAP_MARGIN
        for hit in hits:
            scene, spans = hit.scene, taken.setdefault(hit.scene.parent, [])
            if scene.span and any(a <= scene.span[1] and scene.span[0] <= b for a, b in spans):
                overlapping.append(PartTrace(scene.id, 0, False, "overlaps a better window of the same scene"))
                continue
            unit = self.unit(scene)
            if 0 < cap < self.counter.count(unit):
                def fits(lines: str) -> bool:
                    return self.counter.count(self.render(lines)) <= cap

                part = best_lines(scene, text, fits, self.character.manifest.narrators)
                if part is not None:
                    scene, unit = part, self.unit(part)
            if scene.span:
                spans.append(scene.span)
            units.append(SceneUnit(scene.id, unit, round(hit.score, 4), scene.parent, scene.span))
        return units, overlapping
