"""The web app's "Build a character from a book" section: its handlers, and its components in the built app."""

from __future__ import annotations

import pytest

pytest.importorskip("gradio")

NOVEL = "\n\n".join(f'"Line number {i}, my friend," said Holmes.\n\n"Indeed, number {i}," said Watson.'
                    for i in range(12)) + "\n"


def test_upload_find_the_cast_preview_and_save(tmp_path):
    from chatharuhi.character.discovery import user_characters_dir
    from chatharuhi.errors import InputError
    from chatharuhi.sessions.owners import Owners
    from chatharuhi.web import build as web_build
    from chatharuhi.web.characters import Shelf

    book = tmp_path / "study.txt"
    book.write_text(NOVEL, encoding="utf-8")
    table, choices, analysis = web_build.find_cast([str(book)], "", None)
    assert choices[:2] == ["Holmes", "Watson"] and "| 12 | Holmes |" in table
    assert analysis.sources[0].path == "study.txt"  # the server's temporary path is never shown or stored
    shown = web_build.preview(analysis, "Holmes")
    assert "Holmes:「Line number 0, my friend」" in shown
    shelf = Shelf(owners=Owners(tmp_path / "owners.sqlite3"))
    saved = web_build.save(analysis, "Holmes", "", 5, shelf, "browser-a")
    # a visitor's built character is theirs, as an import is: written apart, seen by them only, hiding nothing
    assert saved == "Holmes" and (shelf.private_dir() / "Holmes" / "texts").is_dir()
    assert not (user_characters_dir() / "Holmes").exists()
    assert shelf.visible("Holmes", "browser-a") and not shelf.visible("Holmes", "browser-b")
    with pytest.raises(InputError, match="already exists"):
        web_build.save(analysis, "Holmes", "", 5, shelf, "browser-b")
    with pytest.raises(InputError, match="upload a novel"):
        web_build.find_cast([], "", None)


def test_names_and_scenes_from_an_upload_are_shown_as_text(tmp_path):
    from chatharuhi.web import build as web_build
    from chatharuhi.web.render import literal

    evil = "![x](http://evil.example/p.png)"
    book = tmp_path / "evil.txt"
    book.write_text("\n\n".join(f'"Line {i} <form><input name=pw></form>, friend," said Holmes.\n\n'
                                f'"Indeed {i}," said Watson.' for i in range(8)) + "\n", encoding="utf-8")
    table, _, analysis = web_build.find_cast([str(book)], f"Holmes|{evil}\nWatson", None)
    assert evil not in table and literal(evil).replace("|", "\\|") in table  # an alias shown, never fetched
    shown = web_build.preview(analysis, "Holmes")
    assert "<form>" not in shown and literal("<form>") in shown


def test_the_section_is_in_the_app(tmp_path):
    from chatharuhi.backends.scripted import ScriptedBackend
    from chatharuhi.web.demo import build_app

    app = build_app(backend=ScriptedBackend(replies=["ok"]), embedder="hash")
    config = app.config if hasattr(app, "config") else app.blocks.config
    ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
    assert {"build-files", "build-find", "build-pick", "build-preview", "build-save"} <= ids
