"""Reading sources for build-character: encodings, limits, epub, subtitles and scripts, and bad input."""

from __future__ import annotations

import zipfile

import pytest

from chatharuhi.building.decoding import decode, read_bytes
from chatharuhi.building.sources import read_source
from chatharuhi.errors import SourceError

ZH = "“你好，”少平说。“你也好。”润叶笑着回答。\n" * 20


@pytest.mark.parametrize("codec,said", [("utf-8", "utf-8"), ("gb18030", "gb18030"), ("gbk", "gb18030"),
                                        ("utf-16", "utf-16 (BOM)"), ("utf-16-le", "utf-16-le")])
def test_chinese_text_in_each_encoding_is_read_and_the_encoding_said(tmp_path, codec, said):
    path = tmp_path / "novel.txt"
    path.write_bytes(ZH.encode(codec))
    src = read_source(path)
    assert src.text == ZH and src.encoding == said and src.language == "zh" and src.kind == "prose"
    assert said in src.describe()


def test_binary_and_empty_files_are_refused(tmp_path):
    binary = tmp_path / "a.txt"
    binary.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(SourceError, match="binary|encoding"):
        read_source(binary)
    empty = tmp_path / "b.txt"
    empty.write_bytes(b"  \n")
    with pytest.raises(SourceError, match="empty"):
        read_source(empty)


def test_unknown_encoding_names_what_was_tried():
    with pytest.raises(SourceError) as exc:
        decode(b"\x81\x8d\x8f\x90\x9d\xff\xfe\x81 text " * 50, "x.txt")
    for codec in ("utf-8", "utf-16", "gb18030", "big5", "cp1252"):
        assert codec in str(exc.value)


def test_a_200_mb_file_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "huge.txt"
    with big.open("wb") as f:
        f.truncate(200_000_000)  # sparse: costs no disk
    with pytest.raises(SourceError, match=r"200 MB; a source may be at most 64 MB"):
        read_source(big)
    small = tmp_path / "small.txt"
    small.write_bytes(b"x" * 5000)
    with pytest.raises(SourceError, match="at most"):
        read_bytes(small, max_bytes=4096)


def _epub(path, chapters):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mimetype", "application/epub+zip")
        z.writestr("META-INF/container.xml", '<container><rootfiles><rootfile full-path="OEBPS/content.opf"/>'
                   "</rootfiles></container>")
        items = "".join(f'<item id="c{i}" href="c{i}.xhtml"/>' for i in range(len(chapters)))
        refs = "".join(f'<itemref idref="c{i}"/>' for i in reversed(range(len(chapters))))
        z.writestr("OEBPS/content.opf", f"<package><manifest>{items}</manifest><spine>{refs}</spine></package>")
        for i, body in enumerate(chapters):
            z.writestr(f"OEBPS/c{i}.xhtml", f"<html><head><title>Book</title></head><body>{body}</body></html>")


def test_epub_text_in_spine_order_and_bad_epubs(tmp_path):
    good = tmp_path / "book.epub"
    _epub(good, ["<p>Second chapter.</p>", "<p>&quot;Hello,&quot; said Holmes.</p><p>First.</p>"])
    src = read_source(good)
    assert src.text.index("said Holmes") < src.text.index("Second chapter") and src.title == "Book"
    notzip = tmp_path / "fake.epub"
    notzip.write_text("just text", encoding="utf-8")
    with pytest.raises(SourceError, match="not an epub"):
        read_source(notzip)
    empty = tmp_path / "empty.epub"
    _epub(empty, ["<img src='a.png'/>"])
    with pytest.raises(SourceError, match="no text"):
        read_source(empty)


def test_srt_cues_with_and_without_names_and_broken_timestamps(tmp_path):
    ok = tmp_path / "ep1.srt"
    ok.write_text("1\n00:00:01,000 --> 00:00:02,000\nHOLMES: You have been in Afghanistan.\n\n"
                  "2\n00:00:03,000 --> 00:00:04,500\n- How did you know?\n- I observed.\n", encoding="utf-8")
    src = read_source(ok)
    assert [(t.speaker, src.text[t.start:t.end]) for t in src.turns] == [
        ("HOLMES", "You have been in Afghanistan."), (None, "How did you know?"), (None, "I observed.")]
    bad = tmp_path / "bad.srt"
    bad.write_text("1\n00:00:01,000 -> 00:00:02\nHello\n", encoding="utf-8")
    with pytest.raises(SourceError, match="line 2: expected a timestamp"):
        read_source(bad)


ASS = """[Script Info]
Title: test

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
Dialogue: 0,0:00:01.00,0:00:02.00,Default,凉宫春日,0,0,0,,{\\i1}我对普通人没兴趣。{\\i0}
Dialogue: 0,0:00:03.00,0:00:04.00,Default,阿虚,0,0,0,,这是什么\\N自我介绍啊
"""


def test_ass_names_are_speakers_and_bad_times_name_the_line(tmp_path):
    path = tmp_path / "ep.ass"
    path.write_text(ASS, encoding="utf-8")
    src = read_source(path)
    assert [(t.speaker, t.shown) for t in src.turns] == [("凉宫春日", "我对普通人没兴趣。"),
                                                         ("阿虚", "这是什么 自我介绍啊")]
    assert src.text[src.turns[0].start:src.turns[0].end] == "{\\i1}我对普通人没兴趣。{\\i0}"
    path.write_text(ASS.replace("0:00:03.00", "3 seconds"), encoding="utf-8")
    with pytest.raises(SourceError, match="line 7: the start time '3 seconds'"):
        read_source(path)


@pytest.mark.parametrize("script,first", [
    ("HOLMES: Sit down.\nWATSON: Thank you.\n(He sits.)\nHOLMES: You are worried.\nWATSON: A little.\n",
     ("HOLMES", "Sit down.")),
    ("春日：「我对普通人没兴趣。」\n阿虚：「啊？」\n旁白：教室里一片安静。\n春日：「就是这样。」\n",
     ("春日", "我对普通人没兴趣。")),
    ("INT. BAKER STREET - DAY\n\nHOLMES\n    You have been in Afghanistan.\n\nWATSON\n    How did you know?\n\n"
     "HOLMES\n    I observed.\n", ("Holmes", "You have been in Afghanistan.")),
])
def test_script_layouts(tmp_path, script, first):
    path = tmp_path / "script.txt"
    path.write_text(script, encoding="utf-8")
    src = read_source(path)
    assert src.kind == "script"
    spoken = [(t.speaker, src.text[t.start:t.end]) for t in src.turns if t.speaker]
    assert spoken[0] == first and len({s for s, _ in spoken}) == 2
