"""The demo's "Add a character" panel: a dropped card, .charx or ChatHaruhi zip imported, or the form's character
created, then opened at once (a taken name offers a choice; ``manage.py`` handles the choice)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..errors import InputError
from .render import literal
from .state import Tab, View

if TYPE_CHECKING:
    from .characters import Shelf


class AddCharacter:
    """Import and create characters on the shelf; ``pick``: the demo's handler that opens one."""

    def __init__(self, shelf: "Shelf", pick: Callable[[str, str, Tab | None], View]):
        self.shelf, self.pick = shelf, pick

    def import_character(self, file: Any, name: str = "", tab: Tab | None = None,
                         as_copy: bool = False) -> View:
        """A dropped card PNG/JSON, .charx or ChatHaruhi zip becomes a character, opened at once. A name that is
        taken is no error: the page offers to open the existing character or to import a copy (``as_copy``)."""
        from .characters import ImportClash

        path = getattr(file, "name", file)
        if not path:
            raise InputError("nothing to import: drop a card PNG/JSON, a .charx or a ChatHaruhi zip")
        try:
            folder = self.shelf.import_file(path, name, owner=tab.owner if tab else "", as_copy=as_copy)
        except ImportClash as clash:
            existing = self.shelf.display_name(clash.existing)
            shown = f"{existing} ({clash.existing})" if existing != clash.existing else clash.existing
            return {"clash": (clash.existing, clash.free),
                    "status": f"“{literal(shown)}” is already one of the characters: open it, or import "
                              f"{literal(clash.file)} as a copy called “{literal(clash.free)}”"}
        shown = self.shelf.display_name(folder)
        named = "" if folder == shown else f" as {literal(folder)}"  # a name another character has stays theirs
        view = self._opened(folder, tab, f"imported {literal(shown)}{named}" + (" (a copy)" if as_copy else ""))
        return {**view, "import_file": None, "import_name": "", "clash": None}  # the drop zone is ready again

    def create_character(self, name: str, display_name: str, prompt: str, scenes: str,
                         scene_files: Any = None, avatar: Any = None, language: str = "auto", greeting: str = "",
                         tab: Tab | None = None) -> View:
        """The form's character, written as a folder, validated, then opened."""
        files = [getattr(f, "name", f) for f in (scene_files or [])]
        folder = self.shelf.create(name, display_name, prompt, scenes, files, getattr(avatar, "name", avatar),
                                   owner=tab.owner if tab else "", language=language or "auto",
                                   greeting=greeting or "")
        view = self._opened(folder, tab, f"created {literal(self.shelf.display_name(folder))}")
        return {**view, "form_clear": True}

    def _opened(self, folder: str, tab: Tab | None, status: str) -> View:
        view = self.pick(folder, tab.user_role if tab else "", tab)
        return {**view, "choices": self.shelf.choices(tab.owner if tab else ""), "status": status}
