"""Tests marked ``native`` run in a forked child, so a crash in native code is one failed test, not the end of pytest.

The child runs the test's whole protocol (setup, call, teardown) and sends the reports back; if it
dies of a signal instead (SIGSEGV in ggml, an OOM kill), the parent reports the test as failed with
the signal's name and the run goes on. Fixtures wider than a function are set up again in each
child: native tests should keep them cheap. Where ``os.fork`` does not exist the tests run in process.
"""

from __future__ import annotations

import os
import pickle
import signal
import time

import pytest
from _pytest.runner import runtestprotocol

MARK = "native"


def _serialise(item, reports) -> bytes:
    hook = item.config.hook
    return pickle.dumps([hook.pytest_report_to_serializable(config=item.config, report=r) for r in reports])


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _run_in_child(item, nextitem) -> list:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run the test, send the reports, leave without running the parent's atexit hooks
        os.close(read)
        code = 0
        try:
            data = _serialise(item, runtestprotocol(item, log=False, nextitem=nextitem))
            with os.fdopen(write, "wb") as pipe:
                pipe.write(data)
        except BaseException:  # noqa: B036 - nothing may escape the forked child
            code = 70
        os._exit(code)
    os.close(write)
    start = time.time()
    data = _read_all(read)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    hook = item.config.hook
    if data:
        return [hook.pytest_report_from_serializable(config=item.config, data=d) for d in pickle.loads(data)]
    if os.WIFSIGNALED(status):
        why = f"the test process died of {signal.Signals(os.WTERMSIG(status)).name} (native code crashed)"
    else:
        why = f"the test process exited with status {os.WEXITSTATUS(status)} without reporting"
    return [pytest.TestReport(item.nodeid, item.location, {k: 1 for k in item.keywords}, "failed", why, "call",
                              duration=time.time() - start)]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    """Run ``native`` tests in a forked child; everything else as usual."""
    if item.get_closest_marker(MARK) is None or not hasattr(os, "fork"):
        return None
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for report in _run_in_child(item, nextitem):
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True
