"""The web demo in a real headless Chromium, driven by selenium: pick, stream, regenerate, swipe, stop, edit,
delete, import, create, isolation, resume — with a screenshot to look at.

Needs Debian's ``chromium chromium-driver fonts-wqy-zenhei`` (``.ci/run`` installs them) and selenium
(the ``dev`` extra). Without them the test fails and says what to install; set
``CHATHARUHI_SKIP_BROWSER=1`` to skip it on a machine that cannot have a browser. A screenshot is saved
to ``$CHATHARUHI_ARTIFACTS`` (default ``tests/artifacts/``, git-ignored).
"""

from __future__ import annotations

import time

import pytest

from helpers.browser import (  # noqa: F401 - browser is a fixture, used by name
    ARTIFACTS,
    SKIP,
    TIMEOUT_S,
    bot_messages,
    browser,
    by_css,
    choose,
    click,
    dropdown_options,
    free_port,
    open_accordion,
    text_of,
    type_into,
    user_messages,
    wait,
)

pytestmark = pytest.mark.skipif(SKIP, reason="CHATHARUHI_SKIP_BROWSER=1")

QUESTION = "大师兄，前面有妖怪吗？"


def answer(n: int) -> str:
    return f"师父放心，俺老孙这就去看看！这是第{n}回答复：前面那座山上妖气冲天，您先在树下歇歇。"


@pytest.fixture
def server(tmp_path):
    """The demo on 127.0.0.1 with a scripted backend that streams slowly enough to watch."""
    from chatharuhi.backends.scripted import ScriptedBackend
    from chatharuhi.sessions import SessionStore
    from chatharuhi.web.demo import build_app

    class Slow(ScriptedBackend):
        def stream(self, messages, **options):
            for chunk in super().stream(messages, **options):
                time.sleep(0.08)
                yield chunk

    backend = Slow([lambda m: f"悟空:「{answer(len(backend.calls))}」"], chunk_size=2)
    store = SessionStore(tmp_path / "sessions.sqlite3")
    app = build_app(backend=backend, sessions=store, embedder="hash")
    port = free_port()
    from chatharuhi.web.layout import CSS

    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, ssr_mode=False, quiet=True,
               css=CSS)  # as chatharuhi.web.demo.launch serves it, so the screenshot shows the real page
    yield f"http://127.0.0.1:{port}/", store
    app.close()
    store.close()


def test_a_fan_chats_swipes_stops_edits_deletes_imports_and_creates_in_chromium(server, browser, tmp_path):  # noqa: F811
    url, store = server
    a = browser("a")
    a.get(url)
    wait(lambda: "SOS团" in text_of(a, "#chat"), "Haruhi's greeting")
    wait(lambda: by_css(a, "#avatar img"), "Haruhi's avatar")

    # pick a character: its greeting opens the chat, the bubble carries its name and avatar
    choose(a, "#character", "孙悟空")
    wait(lambda: "俺老孙探路回来了" in text_of(a, "#chat"), "Wukong's greeting")
    wait(lambda: by_css(a, "#user-role input, #user-role textarea")[0].get_attribute("value") == "唐僧", "唐僧")
    assert "齐天大圣" in text_of(a, "#card")
    assert by_css(a, "#chat [data-testid=bot]")[0].text.startswith("孙悟空\n")
    wait(lambda: any("wukong" in (i.get_attribute("src") or "") for i in by_css(a, "#chat img")), "the bubble avatar")

    # send a Chinese message and watch the reply stream in
    by_css(a, "#message textarea")[0].send_keys(QUESTION)
    click(a, "#send")
    seen: list[str] = []
    end = time.monotonic() + TIMEOUT_S
    while time.monotonic() < end:
        bots = bot_messages(a)
        last = bots[-1] if len(bots) >= 2 else ""
        if last and (not seen or seen[-1] != last):
            seen.append(last)
        if last == answer(1):
            break
        time.sleep(0.03)
    assert seen and seen[-1] == answer(1), seen
    partial = [s for s in seen if s != answer(1)]
    assert len(partial) >= 2 and all(answer(1).startswith(p) for p in partial), seen  # it grew in place
    assert user_messages(a) == [QUESTION] and by_css(a, "#message textarea")[0].get_attribute("value") == ""
    wait(lambda: text_of(a, "#swipes") == "1/1", "the swipe counter")

    # regenerate, then swipe back and forth: the chosen reply is the one the history keeps
    click(a, "#regenerate")
    wait(lambda: bot_messages(a)[-1] == answer(2) and text_of(a, "#swipes") == "2/2", "the regenerated reply")
    (session,) = store.list()
    assert store.alternatives(session.id, 0) == [answer(1), answer(2)] and session.character == "wukong"
    click(a, "#swipe-prev")
    wait(lambda: bot_messages(a)[-1] == answer(1) and text_of(a, "#swipes") == "1/2", "swipe back")
    assert store.turns(session.id)[0].reply == answer(1)
    click(a, "#swipe-next")
    wait(lambda: bot_messages(a)[-1] == answer(2) and text_of(a, "#swipes") == "2/2", "swipe forward")

    # stop a reply half-way: it shows, is not stored, and is kept only when asked
    by_css(a, "#message textarea")[0].send_keys("再讲一遍")
    click(a, "#send")
    wait(lambda: len(bot_messages(a)) == 3 and len(bot_messages(a)[-1]) >= 6, "a partial reply")
    click(a, "#stop")
    wait(lambda: "not kept unless" in text_of(a, "#status"), "the stop notice")
    shown = wait(lambda: bot_messages(a)[-1] if bot_messages(a)[-1].endswith("…") else None, "the partial reply")
    time.sleep(0.5)
    assert bot_messages(a)[-1] == shown and answer(3).startswith(shown[:-1].strip()) and shown[:-1].strip() != answer(3)
    assert len(store.turns(session.id)) == 1
    click(a, "#keep")
    wait(lambda: len(store.turns(session.id)) == 2, "the kept partial reply")
    assert answer(3).startswith(store.turns(session.id)[1].reply) and store.turns(session.id)[1].reply

    # edit a message by clicking its bubble; then delete the second exchange
    by_css(a, "#chat [data-testid=user]")[0].click()
    wait(lambda: by_css(a, "#edit-text textarea")[0].get_attribute("value") == QUESTION, "the edit box")
    type_into(a, "#edit-text textarea", "大师兄，前面那座山有妖怪吗？")
    click(a, "#save-edit")
    wait(lambda: store.turns(session.id)[0].text == "大师兄，前面那座山有妖怪吗？", "the edited message")
    wait(lambda: user_messages(a)[0] == "大师兄，前面那座山有妖怪吗？", "the edit on the page")
    by_css(a, "#chat [data-testid=user]")[1].click()
    wait(lambda: by_css(a, "#edit-text textarea")[0].get_attribute("value") == "再讲一遍", "the second message")
    click(a, "#delete-message")
    wait(lambda: len(store.turns(session.id)) == 1 and len(user_messages(a)) == 1, "the deleted exchange")

    # the "why this reply" panel: retrieved scene ids, scores and text, and the token trace
    open_accordion(a, "#trace")
    wait(lambda: "Prompt:" in text_of(a, "#trace-summary"), "the trace summary")
    trace = store.trace(session.id, 0)
    first = trace["included_scenes"][0]
    wait(lambda: first in text_of(a, "#scenes"), "the scene table")
    assert first in text_of(a, "#scene-texts") and "total_tokens" in text_of(a, "#trace-json")

    # import a card by dropping it on the page, then create a character from the form
    card = tmp_path / "mikuru.json"
    card.write_text('{"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Mikuru", "description": '
                    '"A time traveller from the future.", "first_mes": "Ah, um, hello! I made tea.", "mes_example": '
                    '"<START>\\n{{user}}: Who are you?\\n{{char}}: I am Mikuru. That is classified!"}}',
                    encoding="utf-8")
    open_accordion(a, "#add-character")
    upload = wait(lambda: (by_css(a, "#import-file input[type=file]") or by_css(a, "#import-file input"))[0],
                  "the import drop zone")
    upload.send_keys(str(card))
    wait(lambda: "I made tea" in text_of(a, "#chat"), "the imported character's greeting")
    assert "Mikuru" in text_of(a, "#card")
    type_into(a, "#new-name input, #new-name textarea", "../nagato")
    type_into(a, "#new-prompt textarea", "你是长门有希，话很少。")
    type_into(a, "#new-scenes textarea", "阿虚:「你在看什么？」\n长门:「……书。」")
    click(a, "#create")
    wait(lambda: "looks like a path" in a.find_element("tag name", "body").text, "the bad-name message")
    assert by_css(a, "#new-prompt textarea")[0].get_attribute("value") == "你是长门有希，话很少。"  # nothing lost
    type_into(a, "#new-name input, #new-name textarea", "nagato")
    type_into(a, "#new-display input, #new-display textarea", "长门有希")
    click(a, "#create")
    wait(lambda: "created 长门有希" in text_of(a, "#status"), "the created character")
    wait(lambda: "长门有希" in by_css(a, "#character input")[0].get_attribute("value"), "the new character picked")

    # a PNG with no card in it, and a 20 MB avatar: clear messages in the page, nothing written
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.new("RGB", (40, 40), (0, 90, 0)).save(photo)
    wait(lambda: by_css(a, "#import-file input[type=file]"), "the drop zone, empty again")[0].send_keys(str(photo))
    wait(lambda: "no character card" in a.find_element("tag name", "body").text, "the no-card message")
    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\x89PNG" + b"\0" * (20 * 2**20))
    type_into(a, "#new-name input, #new-name textarea", "yuki")
    type_into(a, "#new-prompt textarea", "你是长门有希。")
    type_into(a, "#new-scenes textarea", "阿虚:「早」\n长门:「……早。」")
    by_css(a, "#new-avatar input[type=file]")[0].send_keys(str(huge))
    time.sleep(1.0)
    click(a, "#create")
    wait(lambda: "the limit is 5 MB" in a.find_element("tag name", "body").text, "the avatar size message")
    from chatharuhi.web.characters import Shelf

    mine = Shelf.private_dir()  # what a visitor adds is that browser's own
    assert not (mine / "yuki").exists() and (mine / "nagato").is_dir()
    assert by_css(a, "#new-prompt textarea")[0].get_attribute("value") == "你是长门有希。"  # the form is kept

    # the chat list holds this character's chats (none of 长门有希's yet); the search box finds the others
    assert dropdown_options(a, "#sessions") == []
    type_into(a, "#chat-search input, #chat-search textarea", "妖怪")
    # two tabs of one browser on the same chat: the stale one is refused, reloaded, and keeps its text
    choose(a, "#sessions", "大师兄")
    wait(lambda: user_messages(a) == ["大师兄，前面那座山有妖怪吗？"], "the chat in the first tab")
    first_tab = a.current_window_handle
    a.switch_to.new_window("tab")
    a.get(url)  # a new tab, like a reload, opens on the chat this browser was in
    wait(lambda: user_messages(a) == ["大师兄，前面那座山有妖怪吗？"], "the chat in the second tab")
    second_tab = a.current_window_handle
    a.switch_to.window(first_tab)
    click(a, "#chat [data-testid=user]")  # scrolled to the middle: an earlier error's toast covers the top
    wait(lambda: by_css(a, "#edit-text textarea")[0].get_attribute("value"), "the edit box in tab 1")
    type_into(a, "#edit-text textarea", "大师兄，前面有妖怪吗？（第一页改）")
    click(a, "#save-edit")
    wait(lambda: store.turns(session.id)[0].text.endswith("（第一页改）"), "tab 1's edit")
    a.switch_to.window(second_tab)
    click(a, "#chat [data-testid=user]")
    wait(lambda: by_css(a, "#edit-text textarea")[0].get_attribute("value"), "the edit box in tab 2")
    type_into(a, "#edit-text textarea", "第二页的改法")
    click(a, "#save-edit")
    wait(lambda: "changed in another tab" in a.find_element("tag name", "body").text, "the stale-tab message")
    wait(lambda: user_messages(a)[0].startswith("大师兄，前面有妖怪吗？"), "tab 2 reloaded")
    assert by_css(a, "#edit-text textarea")[0].get_attribute("value") == "第二页的改法"  # nothing lost
    assert store.turns(session.id)[0].text.endswith("（第一页改）")
    a.close()
    a.switch_to.window(first_tab)

    # back to the first chat, as a fan sees it: screenshot
    wait(lambda: user_messages(a)[0].endswith("（第一页改）"), "the resumed chat")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "web_demo.png"
    a.execute_script("window.scrollTo(0, 0)")
    a.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000

    # nothing was fetched from outside this machine (fonts, scripts, analytics)
    resources = a.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(r.startswith((url, "data:", "blob:")) for r in resources), resources

    # a second visitor (another browser profile) sees neither the chat nor the chat list
    b = browser("b")
    b.get(url)
    wait(lambda: "SOS团" in text_of(b, "#chat"), "Haruhi's greeting for the second visitor")
    assert QUESTION not in text_of(b, "#chat") and dropdown_options(b, "#sessions") == []

    # the first visitor comes back (reload): the page returns to the chat they were in, listed with wukong's
    a.refresh()
    wait(lambda: bot_messages(a) and bot_messages(a)[-1] == answer(2), "the resumed chat after reload")
    by_css(a, "#message textarea")[0].send_keys("好，走吧")
    click(a, "#send")
    wait(lambda: len(store.turns(session.id)) == 2, "a reply in the resumed chat")
    assert [t.text for t in store.turns(session.id)] == ["大师兄，前面有妖怪吗？（第一页改）", "好，走吧"]
    wait(lambda: any("大师兄" in o for o in dropdown_options(a, "#sessions")), "the chat in wukong's list")
