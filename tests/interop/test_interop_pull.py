"""Pulling a packaged role over HTTP: a local server on 127.0.0.1, a cache, a clear error offline."""

from __future__ import annotations

import functools
import http.server
import json
import threading

import pytest

from chatharuhi import ChatHaruhi
from chatharuhi.backends.scripted import ScriptedBackend
from chatharuhi.cli import main
from chatharuhi.errors import CharacterImportError
from chatharuhi.interop.pull import download_role, pull_role


@pytest.fixture
def hub(tmp_path, monkeypatch):
    root = tmp_path / "hub"
    folder = root / "datasets" / "silk-road" / "ChatHaruhi-RolePlaying" / "resolve" / "main"
    folder.mkdir(parents=True)
    rows = [{"text": "你正在扮演长门", "luotuo_openai": "system_prompt"}, {"text": "", "luotuo_openai": "config"},
            {"text": "长门:「……」\n阿虚:「你在看什么书？」"}, {"text": "阿虚:「早」\n长门:「早。」"}]
    (folder / "nagato.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            hits.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("CHATHARUHI_HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    yield hits
    server.shutdown()
    server.server_close()


def test_pull_downloads_once_and_imports(hub, tmp_path):
    folder = pull_role("nagato", tmp_path / "chars")
    assert (folder / "texts").is_dir() and folder.name == "nagato"
    pull_role("silk-road/ChatHaruhi-RolePlaying/nagato", tmp_path / "chars")
    assert len(hub) == 1  # the second pull used the cache


def test_role_from_hf(hub):
    bot = ChatHaruhi(role_from_hf="silk-road/ChatHaruhi-RolePlaying/nagato", llm=ScriptedBackend(["长门:「嗯。」"]),
                     embedder="hash")
    assert bot.character.system_prompt == "你正在扮演长门" and len(bot.character.scenes) == 2
    assert bot.chat("你好") == "嗯。"


def test_missing_role_and_offline_are_clear(hub, monkeypatch):
    with pytest.raises(CharacterImportError, match="404"):
        download_role("nobody")
    monkeypatch.setenv("CHATHARUHI_HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(CharacterImportError, match="offline"):
        download_role("someone", timeout=2)


def test_cli_pull(hub, capsys):
    from chatharuhi.character.discovery import find_character

    assert main(["pull", "nagato"]) == 0
    assert capsys.readouterr().out.strip() == "nagato"
    assert find_character("nagato").system_prompt == "你正在扮演长门"
