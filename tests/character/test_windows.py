"""Long scenes as overlapping windows of whole lines; a small story budget gets the best-matching lines."""

from __future__ import annotations

import pytest

from chatharuhi.character.folder import load_character
from chatharuhi.character.windows import best_lines, estimate_tokens, scene_of, scene_windows, windows
from chatharuhi.retrieval.index import SceneIndex, index_for
from chatharuhi.types import Scene, ScoredScene

LINES = [f"春日:「第{i}句，我们今天要去找外星人、未来人和超能力者，一个都不能少！」" for i in range(1, 31)]
LONG = Scene("long.txt", "\n".join(LINES))


def test_estimate_counts_cjk_characters_and_quarter_words():
    assert estimate_tokens("春日") == 2
    assert estimate_tokens("abcdefgh") == 2
    assert estimate_tokens("") == 0


def test_a_short_scene_stays_whole():
    short = Scene("short.txt", "春日:「走吧」\n阿虚:「好」")
    assert scene_windows(short) == [short]


def test_long_scenes_become_overlapping_windows_of_whole_lines():
    parts = scene_windows(LONG, max_tokens=200, overlap=2)
    assert len(parts) > 2
    assert all(estimate_tokens(p.text) <= 200 for p in parts)
    assert all(p.source == "long.txt" and p.parent == "long.txt" for p in parts)
    assert parts[0].span[0] == 1 and parts[-1].span[1] == len(LINES)  # every line is in some window
    for a, b in zip(parts, parts[1:]):
        assert b.span[0] == a.span[1] - 1  # two lines shared with the window before
    for p in parts:
        assert p.id == f"long.txt#{p.span[0]}-{p.span[1]}"
        assert p.text.split("\n") == LINES[p.span[0] - 1:p.span[1]]  # whole lines, in order
        assert [ln.speaker for ln in p.lines] == ["春日"] * (p.span[1] - p.span[0] + 1)
    assert scene_of(parts[1].id) == "long.txt" and scene_of("a#b.txt") == "a#b.txt"


def test_a_line_longer_than_the_limit_is_a_window_of_its_own():
    scene = Scene("x.txt", "春日:「短」\n" + "长" * 300 + "\n阿虚:「嗯」")
    parts = scene_windows(scene, max_tokens=50, overlap=0)
    assert [p.span for p in parts] == [(1, 1), (2, 2), (3, 3)]


def test_index_search_excludes_a_scene_with_all_its_windows(tmp_path):
    from chatharuhi.retrieval.embeddings import get_embedder

    scenes = windows([LONG, Scene("b.txt", "阿虚:「外星人？」")], max_tokens=200)
    index = SceneIndex.build(scenes, get_embedder("hash"), tmp_path / "v.npz")
    assert {s.parent for s in index.scenes} == {"long.txt", "b.txt"}
    hits = index.search("外星人", 10, exclude=["long.txt"])
    assert [h.scene.id for h in hits] == ["b.txt"]


def test_characters_are_indexed_as_windows_and_window_ids_resolve(tmp_path, monkeypatch):
    monkeypatch.setenv("CHATHARUHI_HOME", str(tmp_path))
    folder = tmp_path / "char"
    (folder / "texts").mkdir(parents=True)
    (folder / "system_prompt.txt").write_text("你是春日。", encoding="utf-8")
    (folder / "texts" / "long.txt").write_text("\n".join(LINES * 3), encoding="utf-8")
    character = load_character(folder)
    from chatharuhi.retrieval.embeddings import get_embedder

    index = index_for(character, get_embedder("hash"))
    assert len(index.scenes) > 1 and all(s.source == "long.txt" for s in index.scenes)
    window = index.scenes[1]
    assert character.scene(window.id).text == window.text
    with pytest.raises(KeyError):
        character.scene("long.txt#999-1000x")


def test_best_lines_keeps_the_matching_line_and_its_neighbours_within_the_budget():
    lines = ["阿虚:「今天天气不错」", "春日:「无聊」", "阿虚:「去图书馆吗」", "长门:「……」",
             "春日:「我们去找外星人！」", "阿虚:「又来了」", "古泉:「有趣」"]
    scene = Scene("w.txt#11-17", "\n".join(lines), source="w.txt", span=(11, 17))
    part = best_lines(scene, "外星人在哪里", lambda t: len(t) <= 40)
    assert "外星人" in part.text and len(part.text) <= 40
    first, last = part.span
    assert part.id == f"w.txt#{first}-{last}" and 11 <= first <= 15 <= last <= 17  # line 15 is the match
    assert part.text.split("\n") == lines[first - 11:last - 10]
    assert best_lines(scene, "外星人", lambda t: False) is None


def test_the_embedded_budget_gets_the_best_lines_of_a_long_chinese_scene(tmp_path, monkeypatch):
    """The issue: with a 300-token story budget every haruhi scene was dropped whole; now the best lines fit."""
    from chatharuhi import ChatHaruhi

    monkeypatch.setenv("CHATHARUHI_HOME", str(tmp_path))
    bot = ChatHaruhi(role="haruhi", llm="scripted", embedder="hash", story_tokens=120, history_tokens=100)
    plan = bot.prepare("今天团里的活动是什么？", role="阿虚")
    kept = [p for p in plan.trace.scenes if p.included]
    assert kept and all("#" in p.id and p.tokens <= 120 for p in kept)
    assert plan.messages[0].content.count(bot.character.scene(kept[0].id).text) == 1


def test_a_window_overlapping_a_better_one_is_left_out(tmp_path, monkeypatch):
    from chatharuhi import ChatHaruhi

    monkeypatch.setenv("CHATHARUHI_HOME", str(tmp_path))
    bot = ChatHaruhi(role="haruhi", llm="scripted", embedder="hash")
    a, b, c = scene_windows(LONG, max_tokens=200, overlap=2)[:3]
    units, skipped = bot.prompt.story_units([ScoredScene(a, 0.9), ScoredScene(b, 0.8), ScoredScene(c, 0.7)], "外星人")
    assert [u.id for u in units] == [a.id, c.id]
    assert [(s.id, s.reason) for s in skipped] == [(b.id, "overlaps a better window of the same scene")]
