"""A test that crashes native code fails alone, with its signal named; the rest of the run still reports."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT

CRASHING = '''
import os, signal, pytest

@pytest.mark.native
def test_segfaults():
    os.kill(os.getpid(), signal.SIGSEGV)

@pytest.mark.native
def test_is_killed():
    os.kill(os.getpid(), signal.SIGKILL)

@pytest.mark.native
def test_native_passes():
    assert 1 + 1 == 2

@pytest.mark.native
def test_native_fails_normally():
    assert 1 + 1 == 3

def test_after_the_crashes():
    assert True
'''


def test_a_segfaulting_test_is_one_failure_and_the_run_goes_on(tmp_path):
    (tmp_path / "conftest.py").write_text(
        "from helpers.native_guard import pytest_runtest_protocol  # noqa: F401\n"
        "def pytest_configure(config):\n    config.addinivalue_line('markers', 'native: forked')\n")
    (tmp_path / "test_crash.py").write_text(CRASHING)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
                        str(tmp_path)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "3 failed, 2 passed" in out, out
    assert "died of SIGSEGV" in out and "died of SIGKILL" in out
    assert "assert (1 + 1) == 3" in out  # an ordinary failure in a child keeps its normal report
