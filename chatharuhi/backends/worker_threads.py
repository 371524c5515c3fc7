"""How many threads a local model uses, and how its OpenMP threads wait.

llama.cpp's threads meet at a barrier after every operation: hundreds of times per generated token.
On a quiet machine a thread that spins at the barrier for a moment is fastest; one that sleeps
(``OMP_WAIT_POLICY=PASSIVE``) pays a wake-up at every barrier and decodes ~3x slower. On a busy
machine it is the other way round: a spinning thread burns the core its partner is waiting for. So
the worker keeps OpenMP's default short spin and uses only the cores other programs leave free,
measured before each generation, and again every ``LOCAL_LOAD_RECHECK_S`` while it runs, from
``/proc/stat``: the CPU time of everything on the cores this process may use, minus the worker's own
and its parent's. With one thread there is no barrier at all.

The pure functions (``omp_env``, ``others_busy``, ``threads_for``) take what they need as arguments;
``ThreadGovernor`` reads the machine.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Mapping

from ..config import LOCAL_FREE_CORE, LOCAL_LOAD_RECHECK_S, LOCAL_LOAD_WINDOW_S, OMP_ENV_DEFAULTS, OMP_ENV_NAMES

_TICK_S = 1.0 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)


def omp_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The OpenMP variables to add to the worker's environment: none if the user set any of their own."""
    if any(name in environ for name in OMP_ENV_NAMES):
        return {}
    return dict(OMP_ENV_DEFAULTS)


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
        wait = LOCAL_LOAD_WINDOW_S - (now.at - self._last.at)
        if wait > 0:  # a window this short would be all rounding (/proc/stat counts in 10 ms ticks)
            time.sleep(wait)
            now = self.sample()
        others = others_busy(self._last, now)
        self._last = now
        return threads_for(self.physical, len(self.cpus), others), others
