"""The web app's "Build a character from a book" section: its handlers, and its components in the built app."""

from __future__ import annotations

import pytest

pytest.importorskip("gradio")

NOVEL = "\n\n".join(f'"Line number {i}, my friend," said Holmes.\n\n"Indeed, number {i}," said Watson.'
                    for i in range(12)) + "\n"


def test_upload_find_the_cast_preview_and_save(tmp_path, monkeypatch):
    from chatharuhi.character.discovery import user_characters_dir
    from chatharuhi.web import build as web_build

    book = tmp_path / "study.txt"
    book.write_text(NOVEL, encoding="utf-8")
    table, choices, analysis = web_build.find_cast([str(book)], "", None)
    assert choices[:2] == ["Holmes", "Watson"] and "| 12 | Holmes |" in table
    assert analysis.sources[0].path == "study.txt"  # the server's temporary path is never shown or stored
    shown = web_build.preview(analysis, "Holmes")
    assert "Holmes:「Line number 0, my friend」" in shown
    saved = web_build.save(analysis, "Holmes", "", 5)
    assert saved == "Holmes" and (user_characters_dir() / "Holmes" / "texts").is_dir()
    from chatharuhi.errors import InputError

    with pytest.raises(InputError, match="already exists"):
        web_build.save(analysis, "Holmes", "", 5)
    with pytest.raises(InputError, match="upload a novel"):
        web_build.find_cast([], "", None)


def test_the_section_is_in_the_app(tmp_path):
    from chatharuhi.backends.scripted import ScriptedBackend
    from chatharuhi.web.app import build_app

    app = build_app(backend=ScriptedBackend(replies=["ok"]), embedder="hash")
    config = app.config if hasattr(app, "config") else app.blocks.config
    ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
    assert {"build-files", "build-find", "build-pick", "build-preview", "build-save"} <= ids
