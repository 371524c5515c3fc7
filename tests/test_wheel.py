"""Built-in characters and prompts work from an installed wheel, not only from a checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_wheel_installs_into_a_fresh_venv_and_chats(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
                   check=True, timeout=600)
    (wheel,) = dist.glob("chatharuhi-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "chatharuhi/_data/characters/haruhi/character.toml" in names
    assert "chatharuhi/_data/prompts/zh/line.txt" in names
    assert not any("fixtures" in n for n in names)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
                   check=True, timeout=900)
    code = ("from chatharuhi import ChatHaruhi\n"
            "bot = ChatHaruhi(role='Haruhi', llm='scripted', embedder='hash')\n"
            "print(bot.chat('你好'), bot.character.path)\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PATH": "/usr/bin:/bin", "CHATHARUHI_HOME": str(tmp_path / "home"), "HOME": str(tmp_path)}
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=work, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "echo: 阿虚:「你好」" in r.stdout and "site-packages/chatharuhi/_data/characters/haruhi" in r.stdout
    r = subprocess.run([str(venv / "bin" / "chatharuhi"), "list"], capture_output=True, text=True, cwd=work, env=env)
    assert r.returncode == 0 and "haruhi" in r.stdout and "wukong" in r.stdout
