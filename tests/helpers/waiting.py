"""Waiting in tests: a thread that records its result, and a bounded poll (a failure, not a timing)."""

from __future__ import annotations

import threading
import time

WAIT_S = 60  # generous bound for a thread to finish on a loaded machine (a failure, not a timing)


def in_thread(fn, *args, **kwargs):
    """Run ``fn`` on a new thread; returns (thread, result list, error list)."""
    result, errors = [], []

    def run():
        try:
            result.append(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - asserted by the caller
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result, errors


def wait_until(condition, what: str) -> None:
    """Poll ``condition()`` until it holds (bounded by WAIT_S: a failure, not a timing)."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)
