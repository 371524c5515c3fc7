"""build-character end to end on small texts: the sieve's rules, the report, the folder, and bad input."""

from __future__ import annotations

import json

import pytest

from chatharuhi.building.analysis import analyse
from chatharuhi.building.build import build_character
from chatharuhi.building.cast import parse_cast
from chatharuhi.character import load_character
from chatharuhi.character.validate import validate_folder
from chatharuhi.errors import CastError, NameNotInSource, OutputExists, TooFewLines

NOVEL = """Chapter I

It was a grey morning in Baker Street.

"You have been in Afghanistan, I perceive," said Holmes.

"How on earth did you know that?" asked Watson.

"I observed it," Holmes replied. "Your face is dark, and your wrists are fair."

"Remarkable."

"Elementary."

Mrs. Hudson came in with the tray. "Your breakfast, Mr. Holmes," she said.

"Thank you, Mrs. Hudson," said Holmes.

"You are welcome, sir."

Watson looked at the tray. "Eggs again," he said.

"Eggs are a science, Watson," said Holmes.

"Then you are a scientist of breakfast."

"Of everything," said Holmes, "that leaves a trace."
"""


def _novel(tmp_path, text=NOVEL, name="study.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_sieve_names_speakers_by_rule_and_keeps_unsure_ones_unknown(tmp_path):
    analysis = analyse([_novel(tmp_path)], cast=parse_cast("Sherlock Holmes|Holmes|Mr. Holmes\nWatson\nMrs. Hudson"))
    rows = list(analysis.report_rows())
    by_text = {r["text"]: r for r in rows}
    assert by_text["You have been in Afghanistan, I perceive,"]["speaker"] == "Sherlock Holmes"
    assert by_text["You have been in Afghanistan, I perceive,"]["rule"] == "explicit"
    assert by_text["How on earth did you know that?"]["speaker"] == "Watson"
    hudson = by_text["Your breakfast, Mr. Holmes,"]  # "she said": the woman named before, a guess below the threshold
    assert (hudson["guess"], hudson["rule"], hudson["speaker"]) == ("Mrs. Hudson", "pronoun-paragraph", None)
    assert by_text["Remarkable."]["guess"] == "Watson" and by_text["Elementary."]["guess"] == "Sherlock Holmes"
    assert by_text["Remarkable."]["rule"] == "alternation"
    for r in rows:  # the report's offsets are into the decoded text
        assert NOVEL[r["start"]:r["end"]] == r["text"]
        assert (r["speaker"] is None) == (r["confidence"] < analysis.threshold or r["guess"] is None)


def test_chinese_tags_before_and_after(tmp_path):
    text = ("少安对他的朋友说：“明天我们去城里。”\n“好啊。”润叶笑着回答。\n胡永合笑着问他：“你们去做什么？”\n"
            "“买书。”少安说。\n")
    path = _novel(tmp_path, text, "zh.txt")
    analysis = analyse([path], cast=parse_cast("孙少安|少安\n田润叶|润叶\n胡永合", language="zh"))
    said = [(r["text"], r["speaker"]) for r in analysis.report_rows()]
    assert said == [("明天我们去城里。", "孙少安"), ("好啊。", "田润叶"), ("你们去做什么？", "胡永合"),
                    ("买书。", "孙少安")]


def test_cast_file_errors_name_the_line():
    with pytest.raises(CastError, match="line 2: an empty name"):
        parse_cast("Holmes|Sherlock\nWatson||John\n")
    with pytest.raises(CastError, match="has no characters"):
        parse_cast("# nothing\n\n")


def test_build_writes_a_valid_folder_and_a_report(tmp_path):
    out = tmp_path / "holmes"
    result = build_character([_novel(tmp_path)], "Holmes", out=out, report=tmp_path / "r.jsonl")
    assert result.name == "Holmes" and result.lines >= 5
    assert not [p for p in validate_folder(out) if p.severity == "error"]
    character = load_character(out)
    speeches = [line for s in character.scenes for line in s.lines if line.kind == "speech"]
    assert any(line.speaker == "Holmes" and "Eggs are a science" in line.text for line in speeches)
    assert "study" in (character.manifest.source or "")
    rows = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {"source", "start", "end", "text", "speaker", "confidence", "rule"} <= rows[0].keys()
    assert rows[0]["source"] == str(tmp_path / "study.txt")


def test_existing_output_is_refused_unless_forced_and_never_half_written(tmp_path, monkeypatch):
    out = tmp_path / "holmes"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    src = _novel(tmp_path)
    with pytest.raises(OutputExists, match="--force"):
        build_character([src], "Holmes", out=out)
    assert (out / "keep.txt").read_text(encoding="utf-8") == "mine"
    import chatharuhi.character.validate as validate

    def broken(*a, **k):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(validate, "validate_folder", broken)  # fails once every file is written, before the move
    with pytest.raises(RuntimeError):
        build_character([src], "Holmes", out=out, force=True)
    assert (out / "keep.txt").exists() and not [p for p in tmp_path.iterdir() if ".building-" in p.name]
    monkeypatch.undo()
    build_character([src], "Holmes", out=out, force=True)
    assert not (out / "keep.txt").exists() and (out / "texts").is_dir()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".holmes")]


def test_a_name_that_never_occurs_lists_the_closest(tmp_path):
    with pytest.raises(NameNotInSource) as exc:
        build_character([_novel(tmp_path)], "Holms", out=tmp_path / "x")
    assert "Holmes" in exc.value.suggestions and not (tmp_path / "x").exists()


def test_too_few_lines_is_refused_with_the_count_unless_min_lines_allows(tmp_path):
    src = _novel(tmp_path)
    with pytest.raises(TooFewLines, match=r"'Watson' has only 1 line .* --min-lines 1"):
        build_character([src], "Watson", out=tmp_path / "w")
    result = build_character([src], "Watson", out=tmp_path / "w", min_lines=1)
    assert result.lines >= 1 and (tmp_path / "w" / "texts").is_dir()


def test_subtitles_build_a_character_from_ass_names(tmp_path):
    lines = "".join(f"Dialogue: 0,0:00:{i:02d}.00,0:00:{i:02d}.50,Default,{'春日' if i % 2 else '阿虚'},"
                    f"0,0,0,,第{i}句话。\n" for i in range(1, 21))
    path = tmp_path / "ep.ass"
    head = "[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
    path.write_text(head + lines, encoding="utf-8")
    result = build_character([path], "春日", out=tmp_path / "haruhi")
    assert result.lines == 10
    character = load_character(tmp_path / "haruhi")
    assert character.manifest.language == "zh"
    assert {line.speaker for s in character.scenes for line in s.lines if line.kind == "speech"} == {"春日", "阿虚"}


def test_cli_build_character(tmp_path, capsys):
    from chatharuhi.cli import main

    out = tmp_path / "cli"
    assert main(["build-character", str(_novel(tmp_path)), "--character", "Holmes", "--out", str(out),
                 "--no-progress", "--report", str(tmp_path / "r.jsonl")]) == 0
    printed = capsys.readouterr().out
    assert f"{out}: Holmes" in printed and "system_prompt.txt" in printed
    assert main(["build-character", str(_novel(tmp_path)), "--character", "Holmes", "--out", str(out),
                 "--no-progress"]) != 0
    assert "exists; pass --force" in capsys.readouterr().err.replace("\n", " ")
