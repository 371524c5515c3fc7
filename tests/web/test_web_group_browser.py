"""The group chat panel in a real headless Chromium: pick two characters, start, send, each reply a bubble with
its speaker's avatar and name, let one speak, mute, pin a fact; with a screenshot to look at (selenium, as
test_web_browser.py: Debian's chromium and chromium-driver; CHATHARUHI_SKIP_BROWSER=1 skips)."""

from __future__ import annotations

import time

import pytest
from web.test_web_browser import (  # noqa: F401 - browser is a fixture
    ARTIFACTS,
    SKIP,
    TIMEOUT_S,
    browser,
    by_css,
    choose,
    click,
    free_port,
    open_accordion,
    text_of,
    type_into,
    wait,
)

pytestmark = pytest.mark.skipif(SKIP, reason="CHATHARUHI_SKIP_BROWSER=1")


@pytest.fixture
def server(tmp_path):
    from chatharuhi.backends.scripted import ScriptedBackend
    from chatharuhi.sessions import SessionStore
    from chatharuhi.web.demo import build_app
    from chatharuhi.web.layout import CSS

    class Slow(ScriptedBackend):
        def stream(self, messages, **options):
            for chunk in super().stream(messages, **options):
                time.sleep(0.03)
                yield chunk

    def in_character(messages):
        system = messages[0].content
        if system.startswith("你正在扮演凉宫春日"):
            return "春日:「好，SOS团出发！」"
        return "悟空:「俺老孙来也，师父莫慌！」"

    store = SessionStore(tmp_path / "sessions.sqlite3")
    app = build_app(backend=Slow([in_character], chunk_size=2), sessions=store, embedder="hash")
    port = free_port()
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, ssr_mode=False, quiet=True,
               css=CSS)
    yield f"http://127.0.0.1:{port}/", store
    app.close()
    store.close()


def bubbles(driver) -> list[str]:
    return [e.text for e in by_css(driver, "#group-chat-log [data-testid=bot]")]


def test_a_group_chat_in_chromium(server, browser):  # noqa: F811 - the fixture imported above
    url, store = server
    a = browser("group")
    a.get(url)
    wait(lambda: "SOS团" in text_of(a, "#chat"), "the page")
    open_accordion(a, "#group-chat")
    wait(lambda: by_css(a, "#group-characters input"), "the group panel to open")
    choose(a, "#group-characters", "凉宫春日")
    choose(a, "#group-characters", "孙悟空")
    click(a, "#group-start")
    wait(lambda: "a new group" in text_of(a, "#group-status"), "the group to start")

    type_into(a, "#group-message textarea", "春日，悟空，我们出发吧！")
    click(a, "#group-send")
    wait(lambda: len(bubbles(a)) == 2 and bubbles(a)[1].endswith("师父莫慌！"), "both replies", TIMEOUT_S)
    first, second = bubbles(a)
    assert first.startswith("凉宫春日\n") and first.endswith("好，SOS团出发！")
    assert second.startswith("孙悟空\n")
    avatars = [i.get_attribute("src") or "" for i in by_css(a, "#group-chat-log [data-testid=bot] img")]
    assert any("haruhi" in s for s in avatars) and any("wukong" in s for s in avatars), avatars
    wait(lambda: any(i.get_attribute("naturalWidth") not in (None, "0")
                     for i in by_css(a, "#group-chat-log [data-testid=bot] img")), "an avatar to load")
    (session,) = store.list()
    assert session.character == "haruhi+wukong"

    choose(a, "#group-speak", "孙悟空")  # let one speak, unprompted
    click(a, "#group-speak-go")
    wait(lambda: len(bubbles(a)) == 3 and bubbles(a)[2].startswith("孙悟空\n") and
         bubbles(a)[2].endswith("师父莫慌！") and not text_of(a, "#group-status"), "Wukong going on, to the end")

    choose(a, "#group-mute", "孙悟空")
    click(a, "#group-apply")
    wait(lambda: "muted: wukong" in text_of(a, "#group-status"), "the muting")
    type_into(a, "#group-message textarea", "悟空，你还在吗？")
    click(a, "#group-send")
    wait(lambda: len(bubbles(a)) == 4 and bubbles(a)[3].endswith("出发！"), "the next reply")
    assert bubbles(a)[3].startswith("凉宫春日\n")  # addressed, but muted: 春日 answers

    open_accordion(a, "#group-memory-panel")
    wait(lambda: by_css(a, "#group-fact-text textarea"), "the memory panel to open")
    type_into(a, "#group-fact-text textarea", "我叫小林")
    click(a, "#group-pin")
    wait(lambda: "1 · 我叫小林" in text_of(a, "#group-memory"), "the pinned fact")
    assert [f.text for f in store.facts(session.id)] == ["我叫小林"]
    sizes = [i.size for i in by_css(a, "#group-chat-log [data-testid=bot] img")]
    assert sizes and all(s["width"] <= 40 and s["height"] <= 40 for s in sizes), sizes  # an avatar, not a picture
    a.execute_script("arguments[0].scrollIntoView({block: 'start'})", by_css(a, "#group-chat")[0])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    a.save_screenshot(str(ARTIFACTS / "web_group.png"))
