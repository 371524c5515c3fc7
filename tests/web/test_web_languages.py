"""A character's language comes from its scenes when nothing declares it (a ChatHaruhi folder with a Chinese prompt
and English scenes is English), and the create form sets it, with a greeting."""

from __future__ import annotations

import pytest

pytest.importorskip("gradio", reason="the web demo needs the [web] extra: pip install 'chatharuhi[web]'")

from chatharuhi.backends.scripted import ScriptedBackend  # noqa: E402
from chatharuhi.sessions import SessionStore  # noqa: E402
from chatharuhi.web.app import WebDemo  # noqa: E402

SNAPE_SCENES = "Snape:「Turn to page three hundred and ninety-four.」\nHarry:「But, sir, we haven't done...」\n" \
               "Snape:「Silence. Five points from Gryffindor.」\n"


@pytest.fixture
def demo(tmp_path):
    with SessionStore(tmp_path / "s.sqlite3") as store:
        yield WebDemo(ScriptedBackend(["Snape:「Silence.」"]), characters_dir=tmp_path / "characters", sessions=store,
                      embedder="hash", terminal_chats=True)


def test_a_chatharuhi_folder_with_english_scenes_is_english_whatever_its_prompt(tmp_path):
    folder = tmp_path / "characters" / "Snape"
    (folder / "texts").mkdir(parents=True)
    (folder / "system_prompt.txt").write_text("你正在扮演斯内普，霍格沃茨的魔药课教授。", encoding="utf-8")
    (folder / "texts" / "1.txt").write_text(SNAPE_SCENES, encoding="utf-8")
    with SessionStore(tmp_path / "s.sqlite3") as store:
        demo = WebDemo(ScriptedBackend(["Snape:「Silence.」"]), characters_dir=tmp_path / "characters",
                       sessions=store, embedder="hash", terminal_chats=True)
        view = demo.start("", name="Snape")
        assert view["user_role"] == "User"  # not 用户
        assert "language en, detected from its scenes" in view["char_where"]


def test_the_create_form_sets_the_language_and_the_greeting(demo):
    token = demo.start("")["browser"]
    tab = demo.start(token)["tab"]
    made = demo.add.create_character("potions", "Professor Snape", "你正在扮演斯内普。", SNAPE_SCENES, None, None,
                                 "auto", "Sit down. Open your books.", tab)
    assert made["user_role"] == "User" and made["chat"][0]["content"].endswith("Sit down. Open your books.")
    chinese = demo.add.create_character("potions-zh", "斯内普", "你正在扮演斯内普。", SNAPE_SCENES, None, None,
                                        "zh", "", made["tab"])
    assert chinese["user_role"] == "用户" and chinese["char_language"] == "zh"
    assert demo.character("potions-zh").language == "zh" and demo.character("potions").language == "en"
    with pytest.raises(Exception, match="language 'fr'"):
        demo.add.create_character("potions-fr", "", "p", SNAPE_SCENES, None, None, "fr", "", made["tab"])
