"""The user's persona and the lorebooks of a chatbot: its system prompt, ``{{user}}`` and the lore that fires
(mixed into ``ChatHaruhi``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..character.folder import own_file
from ..prompting.packing import HistoryTurn, LoreUnit
from ..prompting.persona import Persona, fill_macros


class PersonaAndLore:
    """Sets up the persona and lorebooks when ``ChatHaruhi`` is built, and finds the lore a turn fires."""

    def _setup_persona_and_lore(self, persona: Persona | None, lorebook: Any, lore_tokens: int | None = None) -> None:
        """The user's persona (its name is the default user role and fills ``{{user}}``) and lorebooks:
        the folder's ``lorebook.json`` plus ``lorebook=`` (a path, a ``Lorebook``, or a list of them).
        A book's own ``token_budget`` is its lore share unless ``lore_tokens=`` is given."""
        from ..prompting.lorebook import load_lorebooks
        from ..prompting.templates import load_template

        c = self.character
        self.persona = persona
        if persona is not None and self.user_role == c.user_role:
            self.user_role = persona.name.strip()
        self._user_name = persona.name.strip() if persona is not None else self.user_role
        prompt = fill_macros(c.system_prompt, c.display_name, self._user_name)
        if persona is not None and persona.description.strip():
            block = load_template("persona", c.language).render(name=self._user_name,
                                                                 description=persona.description.strip())
            prompt = prompt.rstrip() + "\n\n" + block.strip()
        self._system_prompt = prompt
        phi = c.manifest.post_history_instructions
        self._post_history = fill_macros(phi, c.display_name, self._user_name).strip() if phi else ""
        extra = lorebook if isinstance(lorebook, (list, tuple)) else [lorebook]
        own = own_file(Path(c.path), "lorebook.json") if getattr(c, "path", None) else None  # no links out
        self.lorebook = load_lorebooks([own if own is not None and own.is_file() else None, *extra])
        self._lore_header = load_template("lore_header", c.language).text if self.lorebook else ""
        if self.lorebook is not None and self.lorebook.token_budget and lore_tokens is None:
            from dataclasses import replace

            self.budget = replace(self.budget, lore_tokens=self.lorebook.token_budget)

    def _lore(self, query_line: str, rendered: Sequence[HistoryTurn]) -> list[LoreUnit]:
        if self.lorebook is None:
            return []
        messages = [m for h in rendered for m in (h.user, h.assistant)] + [query_line]
        name, user = self.character.display_name, self._user_name
        return [LoreUnit(a.entry.id, fill_macros(a.entry.content, name, user), a.entry.insertion_order, a.key)
                for a in self.lorebook.activate(messages)]
