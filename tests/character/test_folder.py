"""Character folders: the parser on real and hand-made files, manifests, and loading errors."""

from __future__ import annotations

import pytest

from chatharuhi.character.folder import load_character, parse_line, parse_scene
from chatharuhi.errors import InvalidCharacter

# Measured on ../shared/fixtures/chatharuhi with this parser: scenes, speech, narration, unformatted lines.
FIXTURE_COUNTS = {
    "haruhi": (172, 1069, 139, 0),  # 名字:(动作)「台词」 and a quote open at the line's end are speech
    "Sheldon": (285, 3513, 16, 0),
    "liyunlong": (420, 2101, 220, 0),
    "zhongli": (270, 1273, 29, 157),
    "wangduoyu": (46, 297, 3, 7),
}
FIXTURE_SPEAKERS = {
    "haruhi": "春日", "Sheldon": "Sheldon", "liyunlong": "李云龙", "zhongli": "钟离", "wangduoyu": "王多鱼",
}


@pytest.mark.parametrize("name", sorted(FIXTURE_COUNTS))
def test_every_fixture_character_loads_with_pinned_counts(fixtures_dir, name):
    c = load_character(fixtures_dir / name)
    scenes, speech, narration, other = FIXTURE_COUNTS[name]
    assert len(c.scenes) == scenes
    assert (c.stats.speech, c.stats.narration, c.stats.other) == (speech, narration, other)
    assert c.speaker == FIXTURE_SPEAKERS[name]
    assert c.system_prompt


def test_fixture_scene_count_matches_files(fixtures_dir):
    for name in FIXTURE_COUNTS:
        files = [p for p in (fixtures_dir / name / "texts").glob("*.txt") if p.read_text(encoding="utf-8").strip()]
        assert len(load_character(fixtures_dir / name).scenes) == len(files)


@pytest.mark.parametrize(
    "raw, kind, speaker, text, action",
    [
        ("春日:「我们去找外星人吧」", "speech", "春日", "我们去找外星人吧", ""),
        ("钟离：「——略懂门道。」", "speech", "钟离", "——略懂门道。", ""),
        ("春日:「那里」(春日指向操场)", "speech", "春日", "那里", "(春日指向操场)"),
        ("旁白:阿虚叹了口气", "narration", "旁白", "阿虚叹了口气", ""),
        ("旁白：「夜深了」", "narration", "旁白", "夜深了", ""),
        (":「''(Time shift)''」", "narration", "", "''(Time shift)''", ""),
        ("Sheldon:「Bazinga!」", "speech", "Sheldon", "Bazinga!", ""),
        ("庄强掏出对讲机」", "other", "", "庄强掏出对讲机」", ""),
        ("注意：这一行不是台词", "other", "", "注意：这一行不是台词", ""),
        ("\ufeff春日:「BOM」", "speech", "春日", "BOM", ""),
    ],
)
def test_parse_line(raw, kind, speaker, text, action):
    line = parse_line(raw, 3)
    assert (line.kind, line.speaker, line.text, line.action, line.lineno) == (kind, speaker, text, action, 3)


def test_blank_line_is_skipped():
    assert parse_line("   ") is None


def _write_character(root, name="x", prompt="你是测试角色。", scenes=None, manifest=None, raw=None):
    folder = root / name
    (folder / "texts").mkdir(parents=True)
    (folder / "system_prompt.txt").write_text(prompt, encoding="utf-8")
    for fname, body in (scenes or {"a.txt": "甲:「你好」\n乙:「再见」"}).items():
        (folder / "texts" / fname).write_text(body, encoding="utf-8")
    for fname, data in (raw or {}).items():
        (folder / "texts" / fname).write_bytes(data)
    if manifest is not None:
        (folder / "character.toml").write_text(manifest, encoding="utf-8")
    return folder


def test_bom_crlf_blank_lines_and_unicode_file_names(tmp_path):
    raw = "\ufeff春日:「一」\r\n\r\n阿虚：「二」\r\n旁白:三\r\n".encode()
    folder = _write_character(tmp_path, raw={"……凉宫 春日.txt": raw})
    c = load_character(folder)
    scene = c.scene("……凉宫 春日.txt")
    assert [(ln.kind, ln.speaker, ln.text) for ln in scene.lines] == [
        ("speech", "春日", "一"), ("speech", "阿虚", "二"), ("narration", "旁白", "三")]
    assert [ln.lineno for ln in scene.lines] == [1, 3, 4]
    assert "\r" not in scene.text


def test_empty_scene_files_are_skipped(tmp_path):
    folder = _write_character(tmp_path, scenes={"a.txt": "甲:「你好」", "b.txt": "\n  \n"})
    assert [s.id for s in load_character(folder).scenes] == ["a.txt"]


def test_non_utf8_names_file_and_line(tmp_path):
    folder = _write_character(tmp_path, raw={"bad.txt": "甲:「好」\n".encode() + "乙:「坏」".encode("gbk")})
    with pytest.raises(InvalidCharacter) as err:
        load_character(folder)
    assert "bad.txt:2" in str(err.value) and "UTF-8" in str(err.value)


def test_missing_system_prompt(tmp_path):
    folder = _write_character(tmp_path)
    (folder / "system_prompt.txt").unlink()
    with pytest.raises(InvalidCharacter, match="system_prompt.txt"):
        load_character(folder)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidCharacter, match="system_prompt"):
        load_character(tmp_path / "empty")


def test_no_scenes(tmp_path):
    folder = _write_character(tmp_path, scenes={"a.txt": ""})
    with pytest.raises(InvalidCharacter, match="no non-empty scenes"):
        load_character(folder)


def test_manifest_fields(tmp_path):
    folder = _write_character(tmp_path, manifest='display_name = "测试"\naliases = ["T"]\nlanguage = "en"\n'
                              'speaker = "甲"\nuser_role = "乙"\nlicense = "CC-BY-4.0"\n')
    c = load_character(folder)
    assert (c.display_name, c.aliases, c.language, c.speaker, c.user_role) == ("测试", ["x", "T"], "en", "甲", "乙")


def test_manifest_unknown_key_is_rejected_with_the_key_named(tmp_path):
    folder = _write_character(tmp_path, manifest='display_nmae = "typo"\n')
    with pytest.raises(InvalidCharacter) as err:
        load_character(folder)
    assert "display_nmae" in str(err.value) and "character.toml" in str(err.value)


def test_manifest_malformed_toml_names_the_line(tmp_path):
    folder = _write_character(tmp_path, manifest='name = "a"\naliases = [\n')
    with pytest.raises(InvalidCharacter, match="character.toml"):
        load_character(folder)


def test_manifest_wrong_type(tmp_path):
    folder = _write_character(tmp_path, manifest='aliases = "not a list"\n')
    with pytest.raises(InvalidCharacter, match="aliases"):
        load_character(folder)


def test_huge_scene_loads(tmp_path):
    folder = _write_character(tmp_path, scenes={"big.txt": "甲:「" + "长" * 100_000 + "」"})
    assert len(load_character(folder).scenes[0].text) > 100_000


def test_language_is_detected_without_manifest(fixtures_dir):
    assert load_character(fixtures_dir / "Sheldon").language == "en"
    assert load_character(fixtures_dir / "haruhi").language == "zh"


def test_builtin_characters_load():
    from chatharuhi.config import builtin_characters_dir

    names = {p.name for p in builtin_characters_dir().iterdir() if p.is_dir()}
    assert {"haruhi", "sherlock", "wukong"} <= names
    haruhi = load_character(builtin_characters_dir() / "haruhi")
    assert len(haruhi.scenes) >= 40 and haruhi.speaker == "春日" and haruhi.manifest.license
    assert load_character(builtin_characters_dir() / "sherlock").language == "en"
    for name in names:
        c = load_character(builtin_characters_dir() / name)
        assert c.stats.other == 0, name  # our own data is fully in format
        assert c.manifest.license and c.manifest.greeting


def test_parse_scene_keeps_text():
    s = parse_scene("a", "\n甲:「一」\n\n")
    assert s.text == "甲:「一」" and len(s.lines) == 1
