"""A local model in its own process, so that a native crash is a typed error and not the end of the program.

``Worker`` starts ``python -m chatharuhi.backends.llama_cpp.worker_main`` and talks to it over a socket pair.
One owner thread per worker (``serial.Serial``) takes requests from a queue and runs them one at a
time; each request has its own queue of chunks, so a caller may resume its generator on any thread
(the server and Gradio do) and no lock is held across a ``yield``. If the child dies (SIGSEGV inside ggml, an OOM
kill, an abort), the request in flight raises ``WorkerCrashed`` naming the signal, the likely cause
and the fix, and the next request starts a fresh child. A child that sends nothing (no token, no
prefill progress) for ``timeout`` seconds is killed and the request raises ``BackendTimeout``.
GGUF LoRA adapters loaded with ``load_adapter`` are remembered and loaded again into a fresh child.
"""

from __future__ import annotations

import itertools
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Iterator

from ...config import LLAMA_CPP_INSTALL
from ...errors import BackendError, BackendTimeout, BackendUnavailable, ModelError, WorkerCrashed
from ..serial import Job, Serial
from .threads import load_at_start, omp_env, user_omp

CHILD_MODULE = "chatharuhi.backends.llama_cpp.worker_main"
STDERR_LINES = 30  # the child's last stderr lines, quoted in crash messages
_POLL_S = 0.05
_request_ids = itertools.count(1)  # what the child's cancel message names

# Why a worker dies, by signal: (likely cause, fix).
CAUSES = {
    "SIGSEGV": ("llama.cpp was built for CPU features this machine does not grant (AMX on a VM that advertises "
                "it, AVX-512 from a native build), or the model file is damaged",
                f"reinstall llama-cpp-python with the portable flags: {LLAMA_CPP_INSTALL}"),
    "SIGILL": ("llama.cpp was built for instructions this CPU lacks (a native build copied from another machine)",
               f"reinstall llama-cpp-python with the portable flags: {LLAMA_CPP_INSTALL}"),
    "SIGBUS": ("the model file changed or was truncated while mapped", "download the model again"),
    "SIGKILL": ("out of memory: the kernel's OOM killer (or another process) killed it",
                "free memory, lower n_ctx=, or use a smaller or more quantised model"),
    "SIGABRT": ("llama.cpp aborted (a failed GGML_ASSERT: often a model of an architecture this llama.cpp "
                "does not support, or a context it cannot allocate)",
                "check the model's architecture and n_ctx=; upgrade llama-cpp-python if the model is newer"),
}


def physical_cores() -> int:
    """Physical cores this process may run on (SMT siblings counted once); llama.cpp's best thread count."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
    cores = set()
    for cpu in allowed:
        path = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(path.read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def crash_error(label: str, code: int | None, stage: str, stderr: list[str]) -> WorkerCrashed:
    """The typed error for a child that exited with ``code`` (negative: killed by that signal)."""
    tail = "".join(f"\n  | {line}" for line in stderr[-8:])
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        cause, fix = CAUSES.get(name, ("it was killed by a signal", "see the worker's last output below"))
        return WorkerCrashed(f"{label}: the model worker died of {name} while {stage}. Likely cause: {cause}. "
                             f"Fix: {fix}. The next request starts a fresh worker.{tail}", signal=name, exit_code=code)
    return WorkerCrashed(f"{label}: the model worker exited (status {code}) while {stage}. "
                         f"The next request starts a fresh worker.{tail}", exit_code=code)


class Worker:
    """A child process that loads ``spec`` (keyword arguments for ``llama_cpp.Llama``) and serves requests."""

    def __init__(self, spec: dict, label: str, timeout: float, start_timeout: float, verbose: bool = False,
                 auto_threads: bool = False, auto_threads_batch: bool = False):
        self.spec, self.label = spec, label
        self.auto_threads, self.auto_threads_batch = auto_threads, auto_threads_batch  # fewer threads when busy
        self.timeout, self.start_timeout, self.verbose = timeout, start_timeout, verbose
        self.info: dict[str, Any] = {}
        self.starts = 0  # how many children were started (a crash makes the next request start one more)
        self.omp_env: dict[str, str] = {}  # the OpenMP variables the live child got from us (not the user's)
        self.load_at_start: float | None = None  # other programs' load, in cores, when it started
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._stderr: deque[str] = deque(maxlen=STDERR_LINES)
        self._serial = Serial(label, stall_s=math.inf)  # no stall limit there: _recv's timeout stops a silent child
        self._closed = False
        self.adapters: dict[str, tuple[str, float]] = {}  # id -> (GGUF path, scale): loaded into every child

    @property
    def closed(self) -> bool:
        """True once ``close()`` ran: no request is taken any more."""
        return self._closed

    @property
    def pid(self) -> int | None:
        """The live child's process id, or None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    # -- the child ------------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """Start the child and load the model now; errors (a bad file, a crash while loading) raise here."""
        if self._proc is None or self._proc.poll() is not None:
            self._spawn()
        return self.info

    def _spawn(self) -> None:
        self._stop_child()
        ours, theirs = socket.socketpair()
        root = str(Path(__file__).resolve().parents[3])  # so the child imports this very chatharuhi
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        # OpenMP reads its settings once, when the child starts: the user's own win, else the load decides.
        self.load_at_start, logical = (None, 0) if user_omp(os.environ) else load_at_start(physical_cores())
        self.omp_env = omp_env(os.environ, self.load_at_start, logical)
        env.update(self.omp_env)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", CHILD_MODULE, str(theirs.fileno())], pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        finally:
            theirs.close()
        self._proc, self._conn, self.starts = proc, Connection(ours.detach()), self.starts + 1
        self._stderr = lines = deque(maxlen=STDERR_LINES)
        self._drainer = threading.Thread(target=self._drain, args=(proc, lines), daemon=True)
        self._drainer.start()
        try:
            threads = {"auto_threads": self.auto_threads, "auto_threads_batch": self.auto_threads_batch}
            self._conn.send(("load", self.spec, threads))
            reply = self._recv(self.start_timeout, "loading the model")
        except BaseException:
            self._stop_child()
            raise
        if reply[0] == "ready":
            self.info = reply[1]
            try:
                for adapter_id, (path, scale) in self.adapters.items():  # a fresh child after a crash
                    self._load_adapter(adapter_id, path, scale)
            except BaseException:
                self._stop_child()
                raise
            return
        self._stop_child()
        self._drainer.join(timeout=2)
        kind, message = reply[1], reply[2]
        if kind == "refused":
            raise BackendUnavailable(message)
        if kind == "model":
            raise ModelError(message)
        raise BackendError(message)

    def _load_adapter(self, adapter_id: str, path: str, scale: float) -> None:
        self._send(("adapter", {"id": adapter_id, "path": path, "scale": scale}), "loading a LoRA adapter")
        reply = self._recv(self.start_timeout, "loading a LoRA adapter")
        if reply[0] == "error":
            raise ModelError(reply[2]) if reply[1] == "model" else BackendError(f"{self.label}: {reply[-1]}")

    def _drain(self, proc: subprocess.Popen, lines: deque) -> None:
        for raw in iter(proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace")
            lines.append(line.rstrip("\n"))
            if self.verbose:
                sys.stderr.write(line)

    def _recv(self, timeout: float | None, stage: str, job: Job | None = None, request_id: int = 0) -> tuple:
        """The child's next message; a crash or silence (``timeout``, else ``self.timeout``) is the typed error."""
        conn = self._conn
        since = time.monotonic()
        while True:
            if job is not None and job.cancelled.is_set() and not job.stats.get("cancel_sent"):
                job.stats["cancel_sent"] = True
                self._send(("cancel", request_id), stage)
            try:
                if conn.poll(_POLL_S):
                    return conn.recv()
            except (EOFError, OSError):
                raise self._crashed(stage) from None
            limit = self.timeout if timeout is None else timeout
            if time.monotonic() - since > limit:
                self._stop_child()
                raise BackendTimeout(
                    f"{self.label}: the model worker sent nothing for {limit:g} s while {stage}; it was stopped "
                    "and the next request starts a fresh one (raise timeout= for very long prompts on slow machines)")

    def _send(self, message: tuple, stage: str) -> None:
        try:
            self._conn.send(message)
        except (OSError, ValueError):
            raise self._crashed(stage) from None

    def _crashed(self, stage: str) -> BackendError:
        proc = self._proc
        if proc is None or self._closed:
            return BackendError(f"{self.label}: the backend was closed while {stage}")
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # the socket broke but the child lingers: end it
            proc.kill()
            code = proc.wait()
        self._drainer.join(timeout=2)  # the last lines the child wrote
        error = crash_error(self.label, code, stage, list(self._stderr))
        self._stop_child()
        return error

    def _stop_child(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            conn.close()
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()

    # -- requests -------------------------------------------------------------------------------
    def submit(self, request: dict, stats: dict[str, Any] | None = None) -> Job:
        """Queue a generation; read its chunks with ``results(job)``; ``job.stats`` (``stats``) fills as it runs."""
        if self._closed:
            raise BackendError(f"{self.label}: the backend was closed")
        request = {**request, "id": next(_request_ids)}
        return self._serial.submit(lambda job: self._run(job, request), stats=stats)

    def load_adapter(self, adapter_id: str, path: str, scale: float = 1.0) -> None:
        """Load a GGUF LoRA adapter into the child under ``adapter_id`` (in turn with generations); a file
        llama.cpp rejects is ``ModelError`` quoting it. Generations select it with ``request["adapter"]``."""
        job = self.submit({"op": "adapter", "adapter_id": adapter_id, "path": path, "scale": scale})
        for _ in self.results(job):
            pass

    def results(self, job: Job) -> Iterator[str]:
        """The chunks of ``job``; closing this generator cancels the job."""
        return self._serial.results(job)

    def _run(self, job: Job, request: dict) -> None:
        if self._proc is None or self._proc.poll() is not None:
            self._spawn()
        if request.get("op") == "adapter":
            if request["adapter_id"] not in self.adapters:
                self._load_adapter(request["adapter_id"], request["path"], request["scale"])
                self.adapters[request["adapter_id"]] = (request["path"], request["scale"])
            return
        self._send(("generate", request), "starting a generation")
        stage = "reading the prompt"
        while True:
            kind, *payload = self._recv(None, stage, job, request["id"])
            if kind == "chunk":
                stage = "generating"
                job.put(payload[0])
            elif kind in ("start", "progress", "done"):
                job.stats.update(payload[0])
                if kind == "done":
                    return
            elif kind == "error":
                raise BackendError(f"{self.label}: {payload[0]}")

    def close(self) -> None:
        """Stop the owner thread and the child."""
        self._closed = True
        self._serial.close(timeout=0)
        self._stop_child()
