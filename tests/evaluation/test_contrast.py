"""The identity and voice judges' contrast set, and the requests an evaluation cannot honour."""

from __future__ import annotations

import json
import shutil

import pytest

from chatharuhi.backends.scripted import ScriptedBackend
from chatharuhi.character.folder import load_character
from chatharuhi.cli import main
from chatharuhi.config import builtin_characters_dir
from chatharuhi.errors import InputError
from chatharuhi.evaluation import run_eval
from chatharuhi.evaluation.cases import build_cases
from chatharuhi.evaluation.contrast import available_contrast, same_character

REPLY = "Sheldon:「Bazinga. I am simply the smartest person in this room, as usual.」"


def _eval(characters, out, **kw):
    kw.setdefault("backend", ScriptedBackend([REPLY]))
    return run_eval(characters, out, embedder="hash", cases=2, configs=("none",), progress=False, plot=False,
                    log=lambda m: None, **kw)


def _copy_of_sherlock(root):
    """A second folder of the built-in sherlock under another folder name (its aliases still say Holmes)."""
    folder = root / "holmes-copy"
    shutil.copytree(builtin_characters_dir() / "sherlock", folder)
    toml = folder / "character.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace('name = "sherlock"', 'name = "holmes-copy"'),
                    encoding="utf-8")
    return folder


def test_a_single_character_is_judged_against_the_other_available_ones(fixtures_dir, tmp_path):
    summary = _eval(["Sheldon"], tmp_path / "out", characters_dir=fixtures_dir)
    contrast = summary["contrast"]
    # English Sheldon: the built-in sherlock; the Chinese characters (built-in and fixture) tell apart for free
    assert contrast["source"] == "available" and contrast["per_character"] == {"Sheldon": ["sherlock"]}
    assert summary["none"]["identity"] is not None and summary["none"]["voice"] is not None
    assert "why_empty" not in summary["none"] and contrast["why_empty"] == {}
    assert "- Sheldon: sherlock" in (tmp_path / "out" / "summary.md").read_text(encoding="utf-8")


def test_with_no_other_character_the_summary_says_why_the_columns_are_empty(tmp_path, capsys):
    # only the built-ins are available, and sherlock is the only English one
    assert main(["eval", "sherlock", "--embedder", "hash", "--backend", "scripted", "--cases", "2",
                 "--configs", "none", "--out", str(tmp_path / "out"), "--no-plot"]) == 0
    err = capsys.readouterr().err
    assert "no other English character is available to tell sherlock apart from" in err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    row = summary["none"]
    assert row["identity"] is None and row["voice"] is None
    assert "--characters-dir" in row["why_empty"]["identity"] and row["why_empty"]["voice"]
    assert summary["by_character"]["sherlock"]["none"]["why_empty"]["identity"].startswith("no other English")
    assert summary["contrast"]["per_character"] == {"sherlock": []}
    # --compare with no names: none on purpose, and the reason says so
    summary = _eval(["sherlock"], tmp_path / "given", compare=())
    assert "--compare named none" in summary["contrast"]["why_empty"]["sherlock"]


def test_the_default_contrast_set_takes_each_character_once(fixtures_dir, tmp_path):
    copies = tmp_path / "more"
    _copy_of_sherlock(copies)
    shutil.copytree(fixtures_dir / "Sheldon", copies / "sheldon-again")
    sheldon = load_character(fixtures_dir / "Sheldon")
    contrast = available_contrast([sheldon], [fixtures_dir, copies])
    assert [c.name for c in contrast.characters] == ["holmes-copy"]  # first in name order; sherlock is a copy
    assert any(x.startswith("sherlock (") and "the same character as holmes-copy" in x for x in contrast.left_out)
    # the evaluated character's own copy (same speaker) is never its own contrast
    assert not any("sheldon-again" in c.name for c in contrast.characters)
    summary = _eval([fixtures_dir / "haruhi"], tmp_path / "zh", characters_dir=fixtures_dir)
    judged = summary["contrast"]["per_character"]["haruhi"]
    assert "haruhi" not in judged and "wukong" in judged  # the built-in haruhi is the fixture's 春日
    assert set(judged) == {"wukong", "liyunlong", "zhongli", "wangduoyu"}


def test_a_given_contrast_set_with_one_character_twice_is_refused(fixtures_dir, tmp_path):
    copy = _copy_of_sherlock(tmp_path / "more")
    with pytest.raises(InputError, match=r"'sherlock' .* and 'holmes-copy' .* are the same character .*'holmes'"):
        _eval([fixtures_dir / "Sheldon"], tmp_path / "a", compare=["sherlock", copy])
    with pytest.raises(InputError, match="'haruhi' .* and 'haruhi' .* are the same character"):
        _eval([fixtures_dir / "haruhi"], tmp_path / "b", compare=["haruhi"])  # the built-in is the same 春日
    with pytest.raises(InputError, match="same character"):
        _eval([fixtures_dir / "Sheldon", copy, "sherlock"], tmp_path / "c")
    assert same_character(load_character(copy), load_character(builtin_characters_dir() / "sherlock"))
    assert not (tmp_path / "a" / "checkpoint.jsonl").exists()  # refused before anything ran


def test_more_cases_than_usable_scenes_is_refused_with_the_count(fixtures_dir, tmp_path, capsys):
    usable = build_cases(load_character(builtin_characters_dir() / "sherlock")).usable_scenes
    with pytest.raises(InputError, match=rf"60 cases per character were asked for, but sherlock has {usable} "
                                         rf"usable scene\(s\).*--cases {usable}\b.*--cases 0"):
        run_eval(["sherlock", fixtures_dir / "Sheldon"], tmp_path / "x", embedder="hash", cases=60,
                 retrieval_only=True, progress=False, plot=False, log=lambda m: None)
    assert main(["eval", "sherlock", "--embedder", "hash", "--retrieval-only", "--cases", "60",
                 "--out", str(tmp_path / "cli"), "--no-plot"]) == 2
    assert f"sherlock has {usable} usable scene(s)" in capsys.readouterr().err
    summary = run_eval(["sherlock"], tmp_path / "all", embedder="hash", cases=0, retrieval_only=True,
                       configs=("full",), progress=False, plot=False, log=lambda m: None)
    assert summary["full"]["cases"] == usable  # 0: every usable scene, one case each
    summary = run_eval(["sherlock"], tmp_path / "default", embedder="hash", retrieval_only=True, configs=("full",),
                       progress=False, plot=False, log=lambda m: None)
    assert summary["full"]["cases"] == min(usable, 30)  # no --cases: up to 30, never refused
