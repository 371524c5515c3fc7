"""Driving the web demo in a real headless Chromium with selenium: a browser-profile factory (the ``browser``
fixture), the free port, and page helpers (wait, find, click, type, dropdowns), shared by the browser tests."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

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

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def needs(path: str) -> None:
    if not Path(path).exists():
        pytest.fail(f"{path} is missing: {INSTALL} (or set CHATHARUHI_SKIP_BROWSER=1)")


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
    """The bot bubbles' texts without the speaker's name line."""
    return [e.text.split("\n", 1)[-1] if "\n" in e.text else "" for e in by_css(driver, "#chat [data-testid=bot]")]


def user_messages(driver) -> list[str]:
    return [e.text.split("\n", 1)[-1] for e in by_css(driver, "#chat [data-testid=user]")]


def click(driver, css: str) -> None:
    wait(lambda: by_css(driver, css) and by_css(driver, css)[0].is_displayed() and by_css(driver, css)[0].is_enabled(),
         f"{css} to be clickable")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", by_css(driver, css)[0])
    by_css(driver, css)[0].click()


def type_into(driver, css: str, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    box = wait(lambda: by_css(driver, css)[0], css)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(text)


def open_accordion(driver, css: str) -> None:
    button = wait(lambda: (by_css(driver, f"{css} > button") or by_css(driver, f"{css} button"))[0], css)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    if button.get_attribute("aria-expanded") != "true":
        button.click()


def choose(driver, css: str, label_part: str) -> None:
    """Open a Gradio dropdown and click the option whose label contains ``label_part``."""
    box = by_css(driver, f"{css} input")[0]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
    box.click()
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


