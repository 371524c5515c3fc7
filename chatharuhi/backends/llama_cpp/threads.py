"""How many threads a local model uses, and how its OpenMP threads wait.

llama.cpp's threads meet at a barrier after every operation: hundreds of times per generated token.
On a quiet machine a thread that spins at the barrier for a moment is fastest; one that sleeps
(``OMP_WAIT_POLICY=PASSIVE``) pays a wake-up at every barrier and decodes ~3x slower. On a busy
machine spinning collapses: a thread spins on its core while the partner it waits for has none.
OpenMP reads its settings once, so the policy is chosen when the worker starts (``omp_env``): with
cores to spare, OpenMP's default spin, and then only the cores other programs leave free, measured
before each generation and again every ``LOCAL_LOAD_RECHECK_S`` while it runs (with one thread there
is no barrier at all); with every core busy, PASSIVE on every core, which cannot collapse and gets
its share of an oversubscribed machine. Load is read from ``/proc/stat``: the CPU time of everything
on the cores this process may use, minus the worker's own and its parent's.

The pure functions (``omp_env``, ``others_busy``, ``threads_for``) take what they need as arguments;
``ThreadGovernor`` reads the machine.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Mapping

from ...config import (
    LOCAL_FREE_CORE,
    LOCAL_LOAD_RECHECK_S,
    LOCAL_LOAD_STALE_S,
    LOCAL_LOAD_WINDOW_S,
    LOCAL_PASSIVE_LOAD,
    OMP_ENV_ALL_BUSY,
    OMP_ENV_NAMES,
    OMP_ENV_SPARE_CORES,
)

_TICK_S = 1.0 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)


def user_omp(environ: Mapping[str, str]) -> bool:
    """Whether the user set an OpenMP variable of their own (then it is theirs to decide)."""
    return any(name in environ for name in OMP_ENV_NAMES)


def omp_env(environ: Mapping[str, str], others: float | None, logical: int) -> dict[str, str]:
    """The OpenMP variables to add to a new worker's environment, given the load other programs put on its cores.

    None if the user set any of their own; PASSIVE when every core is busy (``LOCAL_PASSIVE_LOAD``), where
    sleeping waiters cannot collapse and get their share; else OpenMP's defaults (a short spin).
    """
    if user_omp(environ):
        return {}
    if others is not None and others >= LOCAL_PASSIVE_LOAD * max(1, logical):
        return dict(OMP_ENV_ALL_BUSY)
    return dict(OMP_ENV_SPARE_CORES)


def waits_passively(environ: Mapping[str, str]) -> bool:
    """Whether OpenMP threads sleep at once when they wait (then every core can be used, however busy)."""
    return environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"


@dataclass(frozen=True)
class CpuSample:
    """CPU-seconds used on the allowed CPUs by everything (``busy``) and by us (``ours``), at ``at``."""

    at: float
    busy: float
    ours: float


def others_busy(before: CpuSample, after: CpuSample) -> float:
    """Cores' worth of CPU that other programs used between two samples (never below 0)."""
    window = after.at - before.at
    if window <= 0:
        return 0.0
    return max(0.0, ((after.busy - before.busy) - (after.ours - before.ours)) / window)


def threads_for(physical: int, logical: int, others: float) -> int:
    """Threads: the physical cores other programs leave free (one counts if ``LOCAL_FREE_CORE`` of it is), at least 1.

    Rounded down on purpose: a thread too few costs at most its share, a thread too many makes its
    partners spin while it waits for a core, which made prompts 40x slower on a loaded 2-core machine.
    """
    free_cores = physical * max(0.0, 1.0 - others / max(1, logical))
    return max(1, min(physical, int(free_cores + 1.0 - LOCAL_FREE_CORE)))


def _busy_seconds(cpus: set[int]) -> float | None:
    """CPU-seconds spent not idle on ``cpus`` since boot, from /proc/stat (None off Linux)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = f.readlines()
    except OSError:
        return None
    total = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            # user nice system idle iowait irq softirq steal: all but idle and iowait is busy (steal too:
            # the hypervisor gave that time to another guest)
            fields = [int(v) for v in rest.split()[:8]]
            total += sum(fields) - fields[3] - fields[4]
    return total * _TICK_S


def _process_seconds(pid: int) -> float:
    """CPU-seconds used by process ``pid`` (all its threads), 0 if it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state is field 3, utime 14, stime 15
    return (int(fields[11]) + int(fields[12])) * _TICK_S


class ThreadGovernor:
    """Chooses each generation's thread count from the load other programs put on this process's cores."""

    def __init__(self, physical: int, fixed: int | None = None, parent: int | None = None):
        self.physical, self.fixed = physical, fixed
        self.parent = os.getppid() if parent is None else parent
        try:
            self.cpus = set(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            self.cpus = set(range(os.cpu_count() or 1))
        self._last = self.sample()

    def sample(self) -> CpuSample | None:
        """Now: everything's CPU time on our cores, and ours (this process and the parent that feeds it)."""
        busy = _busy_seconds(self.cpus)
        if busy is None:
            return None
        t = os.times()
        ours = t.user + t.system + (_process_seconds(self.parent) if self.parent > 1 else 0.0)
        return CpuSample(time.monotonic(), busy, ours)

    def due(self) -> bool:
        """Whether ``LOCAL_LOAD_RECHECK_S`` passed since the last look (load that starts mid-reply is caught)."""
        last = self._last
        return self.fixed is None and last is not None and time.monotonic() - last.at >= LOCAL_LOAD_RECHECK_S

    def choose(self) -> tuple[int, float | None]:
        """Threads for what comes next and the other programs' load it was based on (None: not measured)."""
        if self.fixed is not None:
            return self.fixed, None
        now = self.sample()
        if now is None or self._last is None:  # not Linux: assume the machine is ours
            return self.physical, None
        stale = now.at - self._last.at > LOCAL_LOAD_STALE_S
        others = self._others_since_last(now)
        threads = threads_for(self.physical, len(self.cpus), others)
        if stale and threads < self.physical:  # busy on average since the last reply: is it busy now?
            others = self._others_since_last(self.sample())
            threads = threads_for(self.physical, len(self.cpus), others)
        return threads, others

    def _others_since_last(self, now: CpuSample) -> float:
        """Other programs' load from the last look to ``now`` (at least ``LOCAL_LOAD_WINDOW_S`` of it)."""
        wait = LOCAL_LOAD_WINDOW_S - (now.at - self._last.at)
        if wait > 0:  # a window this short would be all rounding (/proc/stat counts in 10 ms ticks)
            time.sleep(wait)
            now = self.sample()
        others = others_busy(self._last, now)
        self._last = now
        return others


def load_at_start(physical: int) -> tuple[float | None, int]:
    """Other programs' load on this process's cores over ``LOCAL_LOAD_WINDOW_S`` (None off Linux), and the CPU count."""
    governor = ThreadGovernor(physical, parent=0)  # in the parent: its own CPU time is ours, nobody else's
    return governor.choose()[1], len(governor.cpus)
