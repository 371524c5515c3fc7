"""The web demo in a real headless Chromium, driven by selenium: pick, stream, regenerate, isolation, resume.

Needs Debian's ``chromium chromium-driver fonts-wqy-zenhei`` (``.ci/run`` installs them) and selenium
(the ``dev`` extra). Without them the test fails and says what to install; set
``CHATHARUHI_SKIP_BROWSER=1`` to skip it on a machine that cannot have a browser. A screenshot is saved
to ``$CHATHARUHI_ARTIFACTS`` (default ``tests/artifacts/``, git-ignored).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from conftest import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver fonts-wqy-zenhei && pip install selenium"
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--window-size=1400,1300", "--lang=zh-CN"]
# read at import: the autouse fixture clears CHATHARUHI_* variables before each test
ARTIFACTS = Path(os.environ.get("CHATHARUHI_ARTIFACTS") or ROOT / "tests" / "artifacts")
SKIP = os.environ.get("CHATHARUHI_SKIP_BROWSER") == "1"
TIMEOUT_S = 30

pytestmark = pytest.mark.skipif(SKIP, reason="CHATHARUHI_SKIP_BROWSER=1")

QUESTION = "大师兄，前面有妖怪吗？"


def answer(n: int) -> str:
    return f"师父放心，俺老孙这就去看看！这是第{n}回答复：前面那座山上妖气冲天，您先在树下歇歇。"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def needs(path: str) -> None:
    if not Path(path).exists():
        pytest.fail(f"{path} is missing: {INSTALL} (or set CHATHARUHI_SKIP_BROWSER=1)")


@pytest.fixture
def server(tmp_path):
    """The demo on 127.0.0.1 with a scripted backend that streams slowly enough to watch."""
    from chatharuhi.backends.scripted import ScriptedBackend
    from chatharuhi.sessions import SessionStore
    from chatharuhi.web import build_app

    class Slow(ScriptedBackend):
        def stream(self, messages, **options):
            for chunk in super().stream(messages, **options):
                time.sleep(0.08)
                yield chunk

    backend = Slow([lambda m: f"悟空:「{answer(len(backend.calls))}」"], chunk_size=2)
    store = SessionStore(tmp_path / "sessions.sqlite3")
    app = build_app(backend=backend, sessions=store, embedder="hash")
    port = free_port()
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, ssr_mode=False, quiet=True)
    yield f"http://127.0.0.1:{port}/", store
    app.close()
    store.close()


@pytest.fixture
def browser(tmp_path):
    """A factory of headless Chromium sessions, each with its own fresh profile (cookies, localStorage)."""
    needs(CHROMIUM)
    needs(CHROMEDRIVER)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(f"selenium is missing: {INSTALL} (or set CHATHARUHI_SKIP_BROWSER=1)")

    drivers = []

    def start(name: str):
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / ('profile-' + name)}"]:
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        drivers.append(driver)
        return driver

    yield start
    for d in drivers:
        d.quit()


# -- page helpers --------------------------------------------------------------------------------------
def wait(predicate, what: str, timeout: float = TIMEOUT_S):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = predicate()
        except Exception:  # an element re-rendered between find and read
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def by_css(driver, css):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def text_of(driver, css) -> str:
    found = by_css(driver, css)
    return found[0].text if found else ""


def bot_messages(driver) -> list[str]:
    return [e.text for e in by_css(driver, "#chat [data-testid=bot]")]


def choose(driver, css: str, label_part: str) -> None:
    """Open a Gradio dropdown and click the option whose label contains ``label_part``."""
    by_css(driver, f"{css} input")[0].click()
    option = wait(lambda: next((o for o in by_css(driver, "[role=option]") if label_part in o.text), None),
                  f"option {label_part!r} in {css}")
    option.click()


def dropdown_options(driver, css: str) -> list[str]:
    by_css(driver, f"{css} input")[0].click()
    time.sleep(0.5)
    labels = [o.text for o in by_css(driver, "[role=option]")]
    from selenium.webdriver.common.keys import Keys

    by_css(driver, f"{css} input")[0].send_keys(Keys.ESCAPE)  # close the list
    return labels


def test_pick_stream_regenerate_isolation_and_resume_in_chromium(server, browser):
    url, store = server
    a = browser("a")
    a.get(url)
    wait(lambda: "SOS团" in text_of(a, "#chat"), "Haruhi's greeting")

    # pick a character: its greeting opens the chat and the user's in-story name follows it
    choose(a, "#character", "孙悟空")
    wait(lambda: "俺老孙探路回来了" in text_of(a, "#chat"), "Wukong's greeting")
    wait(lambda: by_css(a, "#user-role input")[0].get_attribute("value") == "唐僧", "the name 唐僧")
    assert "齐天大圣" in text_of(a, "#card")

    # send a Chinese message and watch the reply stream in
    by_css(a, "#message textarea")[0].send_keys(QUESTION)
    by_css(a, "#send")[0].click()
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
    assert QUESTION in text_of(a, "#chat")
    assert by_css(a, "#message textarea")[0].get_attribute("value") == ""

    # regenerate: a new reply replaces the shown one; the old one is kept in the store
    wait(lambda: by_css(a, "#regenerate")[0].is_enabled(), "the regenerate button")
    by_css(a, "#regenerate")[0].click()
    wait(lambda: bot_messages(a)[-1] == answer(2), "the regenerated reply")
    wait(lambda: "reply 2 of 2" in text_of(a, "#status"), "the alternatives count")
    assert answer(1) not in text_of(a, "#chat")
    (session,) = store.list()
    assert store.alternatives(session.id, 0) == [answer(1), answer(2)] and session.character == "wukong"

    # the "why this reply" panel: retrieved scene ids, scores and text, and the token trace
    by_css(a, "#trace button")[0].click()
    wait(lambda: "Prompt:" in text_of(a, "#trace-summary"), "the trace summary")
    trace = store.trace(session.id, 0)
    first = trace["included_scenes"][0]
    wait(lambda: first in text_of(a, "#scenes"), "the scene table")
    assert first in text_of(a, "#scene-texts") and "total_tokens" in text_of(a, "#trace-json")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "web_demo.png"
    a.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000

    # nothing was fetched from outside this machine (fonts, scripts, analytics)
    resources = a.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(r.startswith((url, "data:", "blob:")) for r in resources), resources

    # a second visitor (another browser profile) sees neither the chat nor the session list
    b = browser("b")
    b.get(url)
    wait(lambda: "SOS团" in text_of(b, "#chat"), "Haruhi's greeting for the second visitor")
    assert QUESTION not in text_of(b, "#chat") and answer(2) not in text_of(b, "#chat")
    assert dropdown_options(b, "#sessions") == []
    assert "俺老孙" not in text_of(b, "#chat")

    # the first visitor comes back (reload): the chat is in their list and resumes where it was
    a.refresh()
    wait(lambda: "SOS团" in text_of(a, "#chat"), "the page after reload")
    choose(a, "#sessions", QUESTION[:8])
    wait(lambda: answer(2) in text_of(a, "#chat") and QUESTION in text_of(a, "#chat"), "the resumed chat")
    wait(lambda: by_css(a, "#user-role input")[0].get_attribute("value") == "唐僧", "the resumed name")
    by_css(a, "#message textarea")[0].send_keys("好，走吧")
    by_css(a, "#send")[0].click()
    wait(lambda: bot_messages(a)[-1] == answer(3), "a reply in the resumed chat")
    assert [t.text for t in store.turns(session.id)] == [QUESTION, "好，走吧"]
    assert len(store.list()) == 1
