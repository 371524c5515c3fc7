"""A local model's threads: the OpenMP environment its worker gets, and the thread count chosen from the load."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from chatharuhi.backends.llama_cpp import threads as worker_threads
from chatharuhi.backends.llama_cpp.threads import (
    CpuSample,
    ThreadGovernor,
    load_at_start,
    omp_env,
    others_busy,
    threads_for,
    user_omp,
    waits_passively,
)
from chatharuhi.config import LOCAL_LOAD_WINDOW_S, OMP_ENV_ALL_BUSY, OMP_ENV_NAMES, OMP_ENV_SPARE_CORES


def test_the_wait_policy_follows_the_load_at_start_and_the_users_own_settings_win():
    assert omp_env({}, 0.0, 2) == dict(OMP_ENV_SPARE_CORES) == {}  # quiet: OpenMP's short spin (PASSIVE: 3.4x slower)
    assert omp_env({}, 1.0, 2) == {}  # one core of two busy: spin, and "auto" threads use the free one
    assert omp_env({}, None, 2) == {}  # not measured (not Linux): the machine counts as ours
    assert omp_env({}, 0.95 * 2, 2) == dict(OMP_ENV_ALL_BUSY) == {"OMP_WAIT_POLICY": "PASSIVE"}  # every core busy
    assert omp_env({}, 7.0, 8) == {} and omp_env({}, 7.5, 8) == {"OMP_WAIT_POLICY": "PASSIVE"}
    for name, value in [("OMP_WAIT_POLICY", "PASSIVE"), ("GOMP_SPINCOUNT", "10000"), ("OMP_WAIT_POLICY", "ACTIVE")]:
        assert name in OMP_ENV_NAMES and user_omp({name: value})
        assert omp_env({name: value}, 0.0, 2) == omp_env({name: value}, 2.0, 2) == {}  # nothing that contradicts it


def test_passive_waiting_is_recognised_however_it_is_spelled():
    assert waits_passively({"OMP_WAIT_POLICY": "passive"}) and waits_passively({"OMP_WAIT_POLICY": " PASSIVE "})
    assert not waits_passively({"OMP_WAIT_POLICY": "ACTIVE"}) and not waits_passively({})


def test_others_load_is_everything_minus_our_own_cpu_time():
    before = CpuSample(at=10.0, busy=100.0, ours=5.0)
    assert others_busy(before, CpuSample(at=12.0, busy=104.0, ours=7.0)) == pytest.approx(1.0)  # (4 - 2) / 2 s
    assert others_busy(before, CpuSample(at=11.0, busy=101.0, ours=6.0)) == 0.0  # all of it was ours
    assert others_busy(before, CpuSample(at=11.0, busy=100.5, ours=6.0)) == 0.0  # tick rounding: never negative
    assert others_busy(before, before) == 0.0  # no window: no claim


@pytest.mark.parametrize("physical, logical, others, threads", [
    (2, 2, 0.0, 2), (2, 2, 0.1, 2),  # a quiet machine: every core
    (2, 2, 0.6, 1), (2, 2, 1.0, 1),  # one core busy (a compile, a video call): the other one
    (2, 2, 2.0, 1), (2, 2, 5.0, 1),  # every core busy: still one thread, never none
    (1, 1, 0.0, 1),
    (8, 16, 2.0, 7), (8, 16, 0.0, 8), (8, 8, 7.9, 1),  # SMT: load is counted on logical CPUs
    (4, 4, 1.0, 3), (4, 4, 0.2, 4),
])
def test_threads_are_the_cores_other_programs_leave_free(physical, logical, others, threads):
    assert threads_for(physical, logical, others) == threads


def test_threads_round_down_when_a_core_is_only_partly_free():
    # A thread too many spins while it waits for a core; a thread too few costs only its share.
    assert threads_for(2, 2, 0.3) == 1 and threads_for(2, 2, 0.2) == 2
    assert all(threads_for(4, 4, x / 10) >= threads_for(4, 4, (x + 1) / 10) for x in range(60))  # monotone


def test_a_fixed_thread_count_is_never_second_guessed():
    governor = ThreadGovernor(physical=4, fixed=3)
    assert governor.choose() == (3, None) and not governor.due()


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="load is read from Linux's /proc/stat")
def test_a_machine_whose_cores_are_all_busy_gets_one_thread():
    cpus = len(os.sched_getaffinity(0))
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cpus)]
    try:
        time.sleep(0.3)  # the hogs are running
        governor = ThreadGovernor(physical=cpus, parent=1)
        start = time.monotonic()
        threads, others = governor.choose()
        assert time.monotonic() - start >= LOCAL_LOAD_WINDOW_S * 0.9  # it waited for a window worth measuring
        assert threads == 1 and others >= 0.5 * cpus
        load, logical = load_at_start(cpus)  # what a new worker's wait policy is decided from
        assert logical == cpus and load >= 0.5 * cpus
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert not governor.due()
    time.sleep(0.6)
    assert governor.due()  # a reply still running would now look again


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="load is read from Linux's /proc/stat")
def test_a_burst_of_other_work_during_the_pause_does_not_cost_the_next_reply_its_threads():
    """The bench's raw side (or a browser) ran between two replies and stopped: the cores are free again.
    两次回复之间别的程序忙过一阵、现在已停：下一次回复仍用全部空闲核心。"""
    cpus = len(os.sched_getaffinity(0))
    governor = ThreadGovernor(physical=cpus, parent=1)
    burst = [subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"])
             for _ in range(cpus)]
    for h in burst:
        h.wait()
    time.sleep(0.3)
    threads, others = governor.choose()  # the last look was before the burst: measured afresh, not averaged
    assert threads == cpus and others < 0.5, (threads, others)


def test_off_linux_the_machine_counts_as_ours(monkeypatch):
    monkeypatch.setattr(worker_threads, "_busy_seconds", lambda cpus: None)
    governor = ThreadGovernor(physical=6)
    assert governor.choose() == (6, None) and not governor.due()
