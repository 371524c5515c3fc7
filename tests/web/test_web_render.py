"""Card text and replies reach the page as text with our own small markup: no remote image, link, form or
formula from a card, a reply or a visitor, in the handlers' output and in a real Chromium (issue 21, item 7)."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time

import pytest

pytest.importorskip("gradio")

from test_web_browser import SKIP, browser, by_css, click, free_port, open_accordion, text_of, wait  # noqa: E402,F401

from chatharuhi.web.render import bubble, literal, markup, toast  # noqa: E402

HOSTILE = ('<img src="{u}/img.png"> ![md]({u}/md.png) [link]({u}/link) <{u}/auto> {u}/bare www.example.com '
           '<form action="{u}/form"><input type="password" name="pw"></form> <a href="{u}/a">a</a> '
           '<iframe src="{u}/frame"></iframe> $$\\href{{{u}/tex}}{{x}}$$ `code` &lt;b&gt;\n'
           '    indented\n- item\n1. one\n# heading\n> quote\n| a | b |\n|---|---|\n[r]: {u}/ref.png\n![ref][r]')


def inert(markdown: str) -> bool:
    """No tag but ours, no link, image, autolink or formula left in what Gradio will render."""
    tags = set(re.findall(r"</?([a-zA-Z][a-zA-Z0-9]*)", markdown))
    return (tags <= {"em", "strong"} and "](" not in markdown and "][" not in markdown
            and not re.search(r"(?i)https?:|www\.|\$\$|`", markdown))


def test_literal_and_markup_leave_nothing_that_renders_as_markup():
    text = HOSTILE.format(u="http://127.0.0.9:9")
    assert inert(literal(text)) and inert(markup(text)) and inert(bubble("<b>x</b>", text))
    assert not re.search(r"(?m)^(\s{4}|[-+#>|]|\d[.)])", markup(text))  # no code block, list, heading, quote, table
    # our markup: actions and stage directions in italics, bold; everything else as written
    assert markup("*smiles* 好啊（笑）**走**") == "<em>smiles</em> 好啊<em>（笑）</em><strong>走</strong>"
    assert bubble("春日", "好啊（笑）走吧") == "**春日**\n好啊<em>（笑）</em>走吧"
    assert markup("Quite. (lights his pipe)") == "Quite. <em>(lights his pipe)</em>"
    assert toast("<img src=x> & more") == "&lt;img src=x&gt; &amp; more"


def hostile_card(tmp_path, base: str):
    card = tmp_path / "evil.json"
    text = HOSTILE.format(u=base)
    card.write_text(json.dumps({"spec": "chara_card_v2", "spec_version": "2.0", "data": {
        "name": f'Evil<img src="{base}/name.png">', "description": text, "first_mes": text,
        "mes_example": f"<START>\n{{{{user}}}}: hi\n{{{{char}}}}: {text}"}}), encoding="utf-8")
    return card


def test_the_demo_hands_gradio_only_inert_text_for_a_hostile_card(tmp_path):
    from chatharuhi.backends.scripted import ScriptedBackend
    from chatharuhi.sessions import SessionStore
    from chatharuhi.web.app import WebDemo

    base = "http://127.0.0.9:9"
    reply = HOSTILE.format(u=base).replace("\n", " ")
    demo = WebDemo(ScriptedBackend([f"Evil:「{reply}」"]), sessions=SessionStore(tmp_path / "s.sqlite3"),
                   embedder="hash")
    view = demo.add.import_character(str(hostile_card(tmp_path, base)), "evil", demo.start("")["tab"])
    assert inert(view["card"]) and all(inert(m["content"]) for m in view["chat"]) and inert(view["status"])
    token = "t" * 43
    views = list(demo.send(f"<img src='{base}/mine.png'>", "", view["tab"], token))
    last = views[-1]
    assert all(inert(m["content"]) for v in views if "chat" in v for m in v["chat"])
    assert inert(last["scene_texts"]) and inert(last["summary"]) and inert(views[0]["status"])
    assert "&#60;img src=" in last["chat"][-1]["content"]  # shown, as written


class Recorder(http.server.BaseHTTPRequestHandler):
    """A 'remote' server on another loopback port: every request the page makes to it is recorded."""

    seen: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        Recorder.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def remote():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    Recorder.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", Recorder.seen
    server.shutdown()


@pytest.mark.skipif(SKIP, reason="CHATHARUHI_SKIP_BROWSER=1")
def test_a_hostile_card_and_reply_show_as_text_and_fetch_nothing_in_chromium(tmp_path, remote, browser):  # noqa: F811
    from chatharuhi.backends.scripted import ScriptedBackend
    from chatharuhi.sessions import SessionStore
    from chatharuhi.web.demo import build_app
    from chatharuhi.web.layout import CSS

    base, seen = remote
    reply = HOSTILE.format(u=base).replace("\n", " ")
    store = SessionStore(tmp_path / "sessions.sqlite3")
    app = build_app(backend=ScriptedBackend([f"Evil:「{reply}」"]), sessions=store, embedder="hash")
    port = free_port()
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, ssr_mode=False, quiet=True,
               css=CSS)
    url = f"http://127.0.0.1:{port}/"
    try:
        a = browser("evil")
        a.get(url)
        wait(lambda: "SOS团" in text_of(a, "#chat"), "Haruhi's greeting")
        open_accordion(a, "#add-character")
        upload = wait(lambda: (by_css(a, "#import-file input[type=file]") or by_css(a, "#import-file input"))[0],
                      "the import drop zone")
        upload.send_keys(str(hostile_card(tmp_path, base)))
        wait(lambda: "indented" in text_of(a, "#chat"), "the hostile greeting")
        by_css(a, "#message textarea")[0].send_keys(f"<img src='{base}/visitor.png'> hi")
        click(a, "#send")
        wait(lambda: len(store.list()) == 1 and store.turns(store.list()[0].id), "the stored reply")
        wait(lambda: len(by_css(a, "#chat [data-testid=bot]")) == 2 and "visitor" not in text_of(a, "#status")
             and "Evil" in by_css(a, "#chat [data-testid=bot]")[1].text, "the reply shown")
        time.sleep(1.0)  # time for any image, frame or formula to load
        assert seen == []  # the browser asked the 'remote' server for nothing
        shown = text_of(a, "#chat")
        assert f'<img src="{base}/img.png">' in shown and f"![md]({base}/md.png)" in shown  # as written
        assert "$$" in shown and "# heading" in shown and "- item" in shown
        for where in ("#chat", "#card"):
            for css in ("form", "input", "iframe", "a[href]", ".katex", "pre", "code", "table", "h1", "li"):
                assert not by_css(a, f"{where} {css}"), f"{where} {css}"
            srcs = [i.get_attribute("src") or "" for i in by_css(a, f"{where} img")]
            assert all(s.startswith(url) for s in srcs), srcs  # only our own avatars
        assert by_css(a, "#chat em") and "Evil<img" in text_of(a, "#card")
    finally:
        app.close()
        store.close()
