"""``validate`` reports every problem with file:line and fails only on errors."""

from __future__ import annotations

from chatharuhi.character.validate import validate_folder, validate_path


def make(tmp_path, files: dict[str, bytes | str]):
    folder = tmp_path / "c"
    for rel, body in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body if isinstance(body, bytes) else body.encode("utf-8"))
    return folder


def test_every_problem_is_reported_with_file_and_line(tmp_path):
    folder = make(tmp_path, {
        "texts/a.txt": "甲:「好」\n这一行没有格式\n",
        "texts/b.txt": "\n",
        "texts/c.txt": "甲:「" + "长" * 3000 + "」",
        "texts/d.txt": "甲:「好」\n".encode() + "乙:「坏」".encode("gbk"),
    })
    problems = validate_folder(folder)
    text = "\n".join(map(str, problems))
    assert "system_prompt.txt: error: missing system_prompt.txt" in text
    assert f"{folder / 'texts/a.txt'}:2: warning: line in no known format" in text
    assert f"{folder / 'texts/b.txt'}: warning: empty scene" in text
    assert "c.txt:1: warning: scene is" in text and "larger than the story budget" in text
    assert f"{folder / 'texts/d.txt'}:2: error: not valid UTF-8" in text


def test_clean_folder_has_no_problems(tmp_path):
    folder = make(tmp_path, {"system_prompt.txt": "你是甲。", "texts/a.txt": "甲:「好」\n旁白:天黑了\n"})
    assert validate_folder(folder) == []


def test_bad_manifest_is_an_error(tmp_path):
    folder = make(tmp_path, {"system_prompt.txt": "p", "texts/a.txt": "甲:「好」", "character.toml": "colour = 1\n"})
    (problem,) = validate_folder(folder)
    assert problem.severity == "error" and "colour" in problem.message and problem.path.name == "character.toml"


def test_builtin_and_fixture_characters_have_no_errors(fixtures_dir):
    from chatharuhi.config import builtin_characters_dir

    for results in (validate_path(builtin_characters_dir()), validate_path(fixtures_dir)):
        assert len(results) >= 3
        for folder, problems in results.items():
            assert not [p for p in problems if p.severity == "error"], folder
    builtin = validate_path(builtin_characters_dir())
    assert all(problems == [] for problems in builtin.values())  # our own data is clean


def test_an_unsupported_language_is_an_error_on_its_line(tmp_path):
    folder = make(tmp_path, {"system_prompt.txt": "Tu es Arsène.", "texts/a.txt": "Arsène:「Bonjour」",
                             "character.toml": 'name = "arsene"\nlanguage = "fr"\n'})
    (problem,) = validate_folder(folder)
    assert problem.severity == "error" and problem.line == 2 and problem.path.name == "character.toml"
    assert "language 'fr' is not supported" in problem.message and "zh, en" in problem.message
    ok = make(tmp_path / "ok", {"system_prompt.txt": "p", "texts/a.txt": "甲:「好」",
                                "character.toml": 'language = "zh-TW"\n'})
    assert validate_folder(ok) == []


def test_a_manifest_speaker_who_never_speaks_is_an_error(tmp_path):
    folder = make(tmp_path, {"system_prompt.txt": "你是春日。", "texts/a.txt": "阿虚:「喂」\n凉宫春日:「干嘛」\n",
                             "character.toml": 'display_name = "春日"\nspeaker = "春日"\n'})
    (problem,) = validate_folder(folder)
    assert problem.severity == "error" and problem.line == 2
    assert "speaker '春日' never speaks" in problem.message and "凉宫春日" in problem.message
