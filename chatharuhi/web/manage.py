"""The demo's "This character" panel and import clashes: where a character's folder is (and which same-named
folder it hides), changing one's own character, exporting any as a card, deleting one's own; and, when an
import's name is taken, opening the existing character or importing a copy under a free name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..errors import InputError
from .characters import AUTO_LANGUAGE
from .render import literal
from .state import Tab, View

if TYPE_CHECKING:
    from .characters import Shelf


class CharacterPanel:
    """Handlers of the character panel and of the import-clash choice, over the shelf.

    The demo's own handlers it goes on with: ``pick`` (open a character), ``character_view`` (the card and avatar),
    ``default_character``, ``forget_bots`` (a character changed: chatbots are rebuilt) and ``import_character``
    (the copy after a clash); ``terminal``: the demo is this machine's own (its paths may be shown, the user's
    characters changed)."""

    def __init__(self, shelf: "Shelf", pick: Callable[..., View], character_view: Callable[[str], View],
                 default_character: Callable[[], str], forget_bots: Callable[[], None],
                 import_character: Callable[..., View], terminal: bool = False):
        self.shelf, self.pick, self.character_view = shelf, pick, character_view
        self.default_character, self.forget_bots = default_character, forget_bots
        self.import_character, self.terminal = import_character, terminal

    def view(self, name: str, owner: str = "") -> View:
        """The panel's fields for a character: its settings, where it lives, what it hides, what may be done
        (by the browser with owner digest ``owner``)."""
        shelf = self.shelf
        entry = shelf.entry(name)
        m = entry.manifest
        declared = m is not None and "language" in m.model_fields_set
        editable = shelf.editable(name, owner, self.terminal)
        local = self.terminal  # the demo is this machine's own: its paths may be shown
        if entry.builtin:
            where = "built in (read-only: export it as a card and import that for a copy of your own)"
        elif editable:
            where = f"yours, in `{literal(str(entry.path))}`" if local else "yours (you added it in this browser)"
        else:
            where = (f"in `{literal(str(entry.path))}` (a folder you added; change it there)" if local else
                     "installed on this server (read-only)")
        hidden = "".join(f"\n\nAlso a folder “{literal(name)}” at `{literal(str(p))}`: not used — this one wins "
                         "(later folders in the search path win; rename one to keep both)."
                         for p in shelf.shadowed(name)) if local else ""
        language = shelf.language(name)
        return {"char_display": shelf.display_name(name), "char_greeting": shelf.greeting(name),
                "char_language": language if declared else AUTO_LANGUAGE,
                "char_prompt": shelf.character(name).system_prompt,
                "char_where": f"**{literal(shelf.display_name(name))}** ({literal(name)}, language "
                              f"{literal(language)}{'' if declared else ', detected from its scenes'}) is {where}."
                              f"{hidden}",
                "char_editable": editable}

    def save(self, display_name: str, greeting: str, language: str, prompt: str, tab: Tab | None) -> View:
        """Save the panel's changes to one's own character (the next reply uses them)."""
        name = self._name(tab)
        self.shelf.update(name, display_name, greeting, language, prompt, owner=tab.owner,
                               local=self.terminal)
        self.forget_bots()
        view = {**self.character_view(name), **self.view(name, tab.owner), "choices": self.shelf.choices(tab.owner),
                "status": f"saved {literal(self.shelf.display_name(name))}: the next reply uses the changes"}
        return view

    def export(self, tab: Tab | None) -> View:
        """The character as a SillyTavern V2 PNG card (with its greeting) to download."""
        name = self._name(tab)
        self.shelf.check_visible(name, tab.owner)
        path = self.shelf.export_card(name)
        return {"card_file": str(path), "status": f"exported {literal(self.shelf.display_name(name))} as "
                                                  f"{literal(path.name)} (a SillyTavern V2 card)"}

    def ask_delete(self, tab: Tab | None) -> View:
        """The first press of Delete: say what will go, and show the confirming button."""
        name = self._name(tab)
        self.shelf._own(name, tab.owner, self.terminal)  # refuses a built-in or another's plainly
        return {"confirm_delete": True, "status": f"press **Delete for good** to delete "
                                                  f"{literal(self.shelf.display_name(name))} and its folder "
                                                  f"`{literal(str(self.shelf.entry(name).path))}`"}

    def delete(self, tab: Tab | None) -> View:
        """Delete one's own character for good; the page goes to the default character."""
        name = self._name(tab)
        shown = self.shelf.display_name(name)
        folder = self.shelf.delete(name, owner=tab.owner, local=self.terminal)
        self.forget_bots()
        default = self.default_character()
        view = self.pick(default, "", Tab(owner=tab.owner))
        where = f" ({literal(str(folder))})" if self.terminal else ""
        return {**view, "choices": self.shelf.choices(tab.owner), "confirm_delete": False,
                "status": f"deleted {literal(shown)}{where}; its chats stay in your list"}

    def open_existing(self, existing: str, tab: Tab | None) -> View:
        """An import clashed: open the character that is already there instead."""
        if not existing:
            raise InputError("there is no earlier import to choose for: drop the file again")
        view = self.pick(existing, tab.user_role if tab else "", tab)
        return {**(view or {}), **self.view(existing, tab.owner if tab else ""), "clash": None, "import_file": None,
                "import_name": "",
                "status": f"opened the existing {literal(self.shelf.display_name(existing))}"}

    def import_copy(self, file: Any, name: str, tab: Tab | None) -> View:
        """An import clashed: import it as a copy under a free name."""
        return self.import_character(file, name, tab, as_copy=True)

    def _name(self, tab: Tab | None) -> str:
        if tab is None or not tab.character:
            raise InputError("pick a character first")
        return tab.character
