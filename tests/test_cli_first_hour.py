"""What a fan meets in the terminal in the first hour: data in the data folder (moved there once), validate's
repeats grouped, list marking broken and shadowed folders, and chat's /help, /load and --resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import FIXTURES, ROOT


def cli(*args, stdin="", env=None):
    full = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "chatharuhi", *args], input=stdin, capture_output=True, text=True,
                          env=full, timeout=180, cwd=ROOT)


def test_data_lives_in_the_data_folder_and_an_old_cache_folder_is_moved_once(tmp_path):
    """No CHATHARUHI_HOME: chats and characters go to XDG's data folder, and what an older version left in the
    cache folder is moved there once, with a notice naming both folders."""
    data, cache = tmp_path / "xdg-data", tmp_path / "xdg-cache"
    old = cache / "chatharuhi"
    (old / "characters" / "mine" / "texts").mkdir(parents=True)
    (old / "characters" / "mine" / "system_prompt.txt").write_text("You are Mine.", encoding="utf-8")
    (old / "characters" / "mine" / "texts" / "a.txt").write_text("Mine:「Hello there.」\n", encoding="utf-8")
    (old / "embeddings").mkdir()
    env = {"XDG_DATA_HOME": str(data), "XDG_CACHE_HOME": str(cache), "CHATHARUHI_HOME": ""}
    first = cli("list", "--paths", env=env)
    assert first.returncode == 0, first.stderr
    new = data / "chatharuhi"
    assert f"from the cache folder {old} to the data folder {new}" in first.stderr
    assert f"{new / 'characters' / 'mine'}" in first.stdout and (new / "characters" / "mine").is_dir()
    assert not (old / "characters").exists() and (old / "embeddings").is_dir()  # caches stay where they are
    again = cli("list", env=env)
    assert again.returncode == 0 and "moved" not in again.stderr and "mine" in again.stdout
    chat = cli("chat", "mine", "--backend", "scripted", "--embedder", "hash", stdin="Hi\n/quit\n", env=env)
    assert chat.returncode == 0, chat.stderr
    assert f"this chat is kept in {new / 'sessions.sqlite3'}" in chat.stdout and (new / "sessions.sqlite3").is_file()


def test_validate_groups_repeated_warnings_with_a_count(tmp_path):
    folder = tmp_path / "noisy"
    (folder / "texts").mkdir(parents=True)
    (folder / "system_prompt.txt").write_text("你是甲。", encoding="utf-8")
    (folder / "texts" / "a.txt").write_text("甲:「好」\n" + "".join(f"没有格式的第{i}行\n" for i in range(20)),
                                            encoding="utf-8")
    (folder / "texts" / "b.txt").write_text("甲:(挥手)「ChatHaruhi 的动作行」\n乙:「没有收尾的引号\n", encoding="utf-8")
    r = cli("validate", str(folder))
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and sum("warning: line in no known format" in line for line in lines) == 3
    assert "… and 17 more warnings of the same kind (line in no known format) in 1 file" in r.stdout
    assert "b.txt" not in r.stdout  # 名字:(动作)「台词」 and a quote open at the end are understood
    assert "(0 errors, 20 warnings)" in r.stdout
    every = cli("validate", str(folder), "--all")
    assert sum("warning: line in no known format" in line for line in every.stdout.splitlines()) == 20


def test_real_chatharuhi_folders_validate_without_action_line_warnings():
    """ChatHaruhi's 春日:(动作)「台词」 lines, ASR lines that lost their closing 」, and long scenes (retrieved as
    windows of whole lines) are all fine: before, haruhi had 3 warnings and liyunlong 4."""
    for name in ("haruhi", "liyunlong"):
        r = cli("validate", str(FIXTURES / name))
        assert r.returncode == 0 and "(0 errors, 0 warnings)" in r.stdout, r.stdout


def test_list_shows_paths_and_which_of_two_folders_of_one_name_wins(tmp_path):
    (tmp_path / "haruhi" / "texts").mkdir(parents=True)
    (tmp_path / "haruhi" / "system_prompt.txt").write_text("你是另一个春日。", encoding="utf-8")
    (tmp_path / "haruhi" / "texts" / "a.txt").write_text("春日:「我是另一个。」", encoding="utf-8")
    r = cli("list", "--paths", "--characters-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.split()[:1] == ["haruhi"])
    assert line.endswith(str(tmp_path / "haruhi"))
    assert (f"also a folder 'haruhi' at {ROOT / 'characters' / 'haruhi'}: not used, {tmp_path / 'haruhi'} wins"
            in r.stdout)


def test_chat_help_is_not_dialogue_and_load_and_resume_bring_a_chat_back(tmp_path):
    args = ["chat", "sherlock", "--backend", "scripted", "--embedder", "hash"]
    first = cli(*args, stdin="/help\n/hepl\nWhere were you last night?\n/quit\n")
    assert first.returncode == 0, first.stderr
    assert "/load" in first.stdout and "unknown command /hepl; did you mean /help?" in first.stdout
    assert first.stdout.count("echo:") == 1 and "Where were you last night?" in first.stdout  # /help never sent
    second = cli(*args, stdin="/load\n/load 1\nAnd this morning?\n/quit\n")
    assert "1. Where were you last night?" in second.stdout and "(opened a chat of 1 turns" in second.stdout
    resumed = cli(*args, "--resume", stdin="/trace\n/quit\n")
    assert resumed.returncode == 0, resumed.stderr
    from chatharuhi.sessions import SessionStore

    store = SessionStore()
    try:
        (session,) = store.list()
        assert [t.text for t in store.turns(session.id)] == ["Where were you last night?", "And this morning?"]
        assert session.title == "Where were you last night?"
    finally:
        store.close()
    saved = tmp_path / "chat.json"
    cli(*args, "--resume", stdin=f"/save {saved}\n/quit\n")
    loaded = cli(*args, stdin=f"/load {saved}\n/quit\n")
    assert "(opened a chat of 2 turns" in loaded.stdout, loaded.stdout + loaded.stderr


def test_resume_with_no_earlier_chat_says_how_to_start_one():
    r = cli("chat", "sherlock", "--backend", "scripted", "--embedder", "hash", "--resume")
    assert r.returncode == 2 and "no earlier terminal chat with sherlock" in r.stderr


def test_the_first_chat_with_a_big_character_says_it_is_indexing(tmp_path):
    big = tmp_path / "big"
    (big / "texts").mkdir(parents=True)
    (big / "system_prompt.txt").write_text("You are Big.", encoding="utf-8")
    for i in range(80):
        (big / "texts" / f"{i:03d}.txt").write_text(f"Big:「Scene number {i}.」\n", encoding="utf-8")
    args = ["ask", "big", "Hello", "--backend", "scripted", "--embedder", "hash", "--characters-dir", str(tmp_path)]
    first = cli(*args)
    assert first.returncode == 0 and "indexing 80 passages with hash" in first.stderr, first.stderr
    assert "kept in" in first.stderr and Path(os.environ["CHATHARUHI_HOME"]).name in first.stderr
    assert "indexing" not in cli(*args).stderr  # cached: silent
