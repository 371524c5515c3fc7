"""Finding characters by name or alias across folders, and never a silent fallback."""

from __future__ import annotations

import pytest

from chatharuhi.character.discovery import find_character, find_entry, list_characters
from chatharuhi.errors import CharacterNotFound, InvalidCharacter


def make(root, name, manifest=None, prompt="提示"):
    folder = root / name
    (folder / "texts").mkdir(parents=True)
    (folder / "system_prompt.txt").write_text(prompt, encoding="utf-8")
    (folder / "texts" / "a.txt").write_text("甲:「你好」", encoding="utf-8")
    if manifest:
        (folder / "character.toml").write_text(manifest, encoding="utf-8")
    return folder


def test_builtin_by_name_and_alias_case_insensitive():
    assert find_character("haruhi").name == "haruhi"
    assert find_character("HARUHI").name == "haruhi"
    assert find_character("凉宫春日").name == "haruhi"
    assert find_character("sherlock holmes").name == "sherlock"


def test_unknown_name_lists_close_matches_and_available():
    with pytest.raises(CharacterNotFound) as err:
        find_character("harhui")
    msg = str(err.value)
    assert "did you mean 'haruhi'" in msg and "sherlock" in msg and "wukong" in msg
    assert err.value.suggestions == ["haruhi"]


def test_characters_dir_argument(tmp_path, fixtures_dir):
    make(tmp_path, "my_char", 'aliases = ["小明"]\n')
    assert find_character("my_char", characters_dir=tmp_path).path == tmp_path / "my_char"
    assert find_character("小明", characters_dir=str(tmp_path)).name == "my_char"
    assert find_character("zhongli", characters_dir=fixtures_dir).speaker == "钟离"


def test_env_path_list(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    make(a, "one")
    make(b, "two")
    monkeypatch.setenv("CHATHARUHI_CHARACTERS", f"{a}:{b}")
    names = {e.name for e in list_characters()}
    assert {"one", "two", "haruhi"} <= names


def test_user_folder_shadows_builtin(tmp_path):
    make(tmp_path, "haruhi", prompt="我的春日")
    assert find_character("haruhi", characters_dir=tmp_path).system_prompt == "我的春日"


def test_broken_folder_does_not_stop_the_others(tmp_path):
    make(tmp_path, "good")
    make(tmp_path, "bad", manifest="oops = 1\n")
    entries = {e.name: e for e in list_characters(tmp_path)}
    assert entries["good"].error is None
    assert isinstance(entries["bad"].error, InvalidCharacter) and "oops" in str(entries["bad"].error)
    with pytest.raises(InvalidCharacter, match="character.toml"):
        find_character("bad", characters_dir=tmp_path)
    assert find_character("good", characters_dir=tmp_path).name == "good"


@pytest.mark.parametrize("name", ["../haruhi", "..", "a/b", "/etc", "..\\x", "haruhi/../../etc"])
def test_path_like_names_never_escape(name, tmp_path):
    with pytest.raises((InvalidCharacter, CharacterNotFound)):
        find_entry(name, characters_dir=tmp_path)


def test_empty_name():
    with pytest.raises(CharacterNotFound):
        find_entry("  ")


def test_not_found_says_the_given_folder_is_missing(tmp_path):
    from chatharuhi.character.discovery import find_entry
    from chatharuhi.errors import CharacterNotFound

    missing = tmp_path / "my_characters"
    with pytest.raises(CharacterNotFound) as info:
        find_entry("my_char", missing)
    assert str(info.value).startswith(f"Unknown character 'my_char'. The characters folder {missing} does not "
                                      "exist. Available: ")
    assert str(info.value).endswith("wukong.") and info.value.missing_dirs == [str(missing)]
