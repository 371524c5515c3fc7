"""A local model in its own process, so that a native crash is a typed error and not the end of the program.

``Worker`` starts ``python -m chatharuhi.backends.llama_cpp.server_main``: llama.cpp's own server, bound to
127.0.0.1 on a port the OS picks, with a random API key (handed over on the child's stdin) and CORS closed.
The backend talks to it over HTTP (``Child.wire``, the ``openai`` backend pointed at it). If the child dies
(SIGSEGV inside ggml, an OOM kill, an abort), the requests in flight raise ``WorkerCrashed`` naming the
signal, the likely cause and the fix, and the next request starts a fresh child. A child that sends nothing
for ``timeout`` seconds (no token, no prompt progress) is killed and the request raises ``BackendTimeout``.
``restart`` (a new set of adapters) starts a new child for new requests and stops the old one when its last
request ends.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import selectors
import signal
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Any

from ...config import XLLAMACPP_INSTALL
from ...errors import AdapterError, BackendError, BackendTimeout, BackendUnavailable, ModelError, WorkerCrashed

CHILD_MODULE = "chatharuhi.backends.llama_cpp.server_main"
STDERR_LINES = 60  # the child's last stderr lines, quoted in crash and start-up messages
STOP_GRACE_S = 1.0  # a child asked to stop (stdin closed) is killed after this
_ERROR_LINE = re.compile(r"^\S+ E (?:\S+\s+)?(.*)$")  # llama.cpp's log: "0.00.102.297 E srv  load_model: ..."

# Why a worker dies, by signal: (likely cause, fix).
CAUSES = {
    "SIGSEGV": ("the model file is damaged, or llama.cpp was built for CPU features this machine does not grant "
                "(a source build with AMX or AVX-512 on a VM that advertises them)",
                f"reinstall the portable prebuilt wheel: {XLLAMACPP_INSTALL}; or download the model again"),
    "SIGILL": ("llama.cpp was built for instructions this CPU lacks (a source build copied from another machine)",
               f"reinstall the portable prebuilt wheel: {XLLAMACPP_INSTALL}"),
    "SIGBUS": ("the model file changed or was truncated while mapped", "download the model again"),
    "SIGKILL": ("out of memory: the kernel's OOM killer (or another process) killed it",
                "free memory, lower n_ctx= or n_parallel=, or use a smaller or more quantised model"),
    "SIGABRT": ("llama.cpp aborted (a failed GGML_ASSERT: often a model of an architecture this llama.cpp "
                "does not support, or a context it cannot allocate)",
                "check the model's architecture and n_ctx=; upgrade xllamacpp if the model is newer"),
}


def auto_threads() -> int:
    """``n_threads="auto"``: one physical core fewer than this process may use, at least 1. llama.cpp's threads
    spin while they wait for each other, so a thread that loses its core to the program itself (the demo, the
    embedder) or to anything else running stalls every token: on 2 busy cores, 32 tokens took 37-76 s on 2
    threads against 7-8 s on 1 (docs/local-models.md)."""
    return max(1, physical_cores() - 1)


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


def llama_errors(lines: list[str], limit: int = 3) -> list[str]:
    """llama.cpp's own error messages among ``lines`` (its log), first ones first, each once."""
    said: list[str] = []
    for line in lines:
        m = _ERROR_LINE.match(line)
        if m and m.group(1).strip() and m.group(1).strip() not in said:
            said.append(m.group(1).strip())
    return said[:limit]


class Child:
    """One worker process: its server's address and key, the HTTP client for it, and its last stderr lines."""

    def __init__(self, proc: subprocess.Popen, api_key: str, label: str, timeout: float, verbose: bool):
        self.proc, self.api_key, self.label = proc, api_key, label
        self.address = ""
        self.stderr: deque[str] = deque(maxlen=STDERR_LINES)
        self.users = 0  # requests in flight on it
        self.retiring = False  # replaced by a newer child: stopped when its last request ends
        self.timeout, self.verbose = timeout, verbose
        self.wire: Any = None
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc.poll() is None else None

    def _drain(self) -> None:
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.stderr.append(line)
            if self.verbose:
                sys.stderr.write(line + "\n")

    def connect(self, address: str) -> None:
        """Point the OpenAI-protocol client at this child's server (the same client the openai backend uses)."""
        from ..openai_compat import OpenAIBackend

        self.address = address
        self.wire = OpenAIBackend(model=self.label, base_url=address, api_key=self.api_key, timeout=self.timeout,
                                  max_retries=0, max_stop=None)

    def exit_code(self, wait: float = 0.0) -> int | None:
        """The child's exit status (negative: a signal), waiting up to ``wait`` s; None while it runs."""
        try:
            return self.proc.wait(timeout=wait) if wait else self.proc.poll()
        except subprocess.TimeoutExpired:
            return None

    def lines(self) -> list[str]:
        """Its stderr so far (after the reader has caught up with a child that ended)."""
        if self.proc.poll() is not None:
            self._drainer.join(timeout=2)
        return list(self.stderr)

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """End the child: close its stdin (it exits), kill it after ``grace`` s; close the client."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        if self.wire is not None:
            self.wire.close()


class Worker:
    """Starts and supervises the child that serves ``spec`` (the settings ``server_main`` reads)."""

    def __init__(self, spec: dict[str, Any], label: str, timeout: float, start_timeout: float, verbose: bool = False):
        self.spec, self.label = spec, label
        self.timeout, self.start_timeout, self.verbose = timeout, start_timeout, verbose
        self.starts = 0  # children started (a crash makes the next request start one more)
        self.info: dict[str, Any] = {}
        self._child: Child | None = None
        self._lock = threading.Lock()  # around starting and swapping children, never held by a request
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once ``close()`` ran: no request is taken any more."""
        return self._closed

    @property
    def pid(self) -> int | None:
        """The live child's process id, or None."""
        child = self._child
        return child.pid if child is not None else None

    @property
    def child(self) -> Child | None:
        """The child new requests go to (None before the first start or after a crash)."""
        return self._child

    def start(self) -> Child:
        """The running child, started now if there is none; a bad file or setting raises here."""
        with self._lock:
            if self._closed:
                raise BackendError(f"{self.label}: the backend was closed")
            child = self._child
            if child is None or child.proc.poll() is not None:
                child = self._child = self._spawn(self.spec)
            return child

    def acquire(self) -> Child:
        """The child to send a request to, counted as in use until ``release``."""
        while True:
            child = self.start()
            with self._lock:
                if child is self._child:
                    child.users += 1
                    return child

    def release(self, child: Child) -> None:
        """A request on ``child`` ended; a retired child with no request left stops."""
        with self._lock:
            child.users -= 1
            done = child.retiring and child.users <= 0
        if done:
            child.stop()

    def restart(self, spec: dict[str, Any]) -> None:
        """Serve ``spec`` from a new child; the old one finishes its requests, then stops."""
        with self._lock:
            new = self._spawn(spec)  # a bad spec raises here and leaves the running child as it was
            old, self._child, self.spec = self._child, new, spec
            if old is not None:
                old.retiring = True
                idle = old.users <= 0
        if old is not None and idle:
            old.stop()

    def failed(self, child: Child, stage: str) -> BackendError | None:
        """The crash error if ``child`` died (it is then forgotten: the next request starts a fresh one)."""
        code = child.exit_code(wait=0.0 if self._closed else 2.0)  # a killed child may still be on its way out
        if code is None:
            return None
        self._forget(child)
        if self._closed:
            return BackendError(f"{self.label}: the backend was closed while {stage}")
        return crash_error(self.label, code, stage, child.lines())

    def hung(self, child: Child, limit: float, stage: str) -> BackendTimeout:
        """Kill a child that sent nothing for ``limit`` s; the next request starts a fresh one."""
        child.proc.kill()
        child.exit_code(wait=5.0)
        self._forget(child)
        return BackendTimeout(
            f"{self.label}: the model worker sent nothing for {limit:g} s while {stage}; it was stopped and "
            "the next request starts a fresh one (raise timeout= for very long prompts on slow machines)")

    def _forget(self, child: Child) -> None:
        with self._lock:
            if self._child is child:
                self._child = None
        child.stop(grace=0)

    def _spawn(self, spec: dict[str, Any]) -> Child:
        key = secrets.token_urlsafe(24)
        root = str(Path(__file__).resolve().parents[3])  # so the child imports this very chatharuhi
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        proc = subprocess.Popen([sys.executable, "-m", CHILD_MODULE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
        child = Child(proc, key, self.label, self.timeout, self.verbose)
        self.starts += 1
        try:
            proc.stdin.write((json.dumps({**spec, "api_key": key}) + "\n").encode("utf-8"))
            proc.stdin.flush()
            reply = self._first_line(child)
        except BaseException:
            child.stop(grace=0)
            raise
        if "address" in reply:
            child.connect(reply["address"])
            self.info = {"address": reply["address"], "system_info": reply.get("system_info", "")}
            return child
        child.stop(grace=2)
        raise self._start_error(spec, reply, child.lines())

    def _first_line(self, child: Child) -> dict[str, Any]:
        """The child's answer to its settings, within ``start_timeout``; a crash or silence is the typed error."""
        with selectors.DefaultSelector() as sel:
            sel.register(child.proc.stdout, selectors.EVENT_READ)
            if not sel.select(self.start_timeout):
                child.proc.kill()
                raise BackendTimeout(f"{self.label}: the model worker did not start within {self.start_timeout:g} s "
                                     "(loading the model); raise the backend's start timeout on a slow disk")
        line = child.proc.stdout.readline()
        if not line:  # it died before answering
            raise crash_error(self.label, child.exit_code(wait=5.0), "loading the model", child.lines())
        return json.loads(line)

    def _start_error(self, spec: dict[str, Any], reply: dict[str, Any], lines: list[str]) -> BackendError:
        said = llama_errors(lines)
        why = f" llama.cpp said: {' / '.join(said)}" if said else ""
        if reply.get("error") == "refused":
            return BackendUnavailable(f"{self.label}: {reply.get('message')}. Reinstall the portable prebuilt wheel: "
                                      f"{XLLAMACPP_INSTALL}")
        if any("bind" in s for s in said):
            return BackendUnavailable(f"{self.label}: port {spec['port']} on 127.0.0.1 is taken by another program; "
                                      f"pass another port= or leave it out (the OS then picks a free one).{why}")
        if any("lora" in s.lower() or "adapter" in s.lower() for s in said):
            named = re.search(r"failed to load lora adapter '([^']+)'", " ".join(llama_errors(lines, limit=20)))
            adapter = named.group(1) if named else "a LoRA adapter"
            return AdapterError(f"{adapter}: llama.cpp cannot load it onto the model {spec['model_path']}: a LoRA made "
                                "for another base model? Load the base it was trained for, or train one for this "
                                f"base (chatharuhi train --gguf, chatharuhi export-gguf).{why}")
        return ModelError(f"{spec['model_path']}: llama.cpp cannot load it; is it a complete GGUF file of an "
                          f"architecture this llama.cpp supports?{why}")

    def close(self) -> None:
        """Stop the child; no request is taken any more."""
        with self._lock:
            self._closed = True
            child, self._child = self._child, None
        if child is not None:
            child.stop(grace=0.2)
