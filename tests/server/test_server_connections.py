"""Slow clients cannot hold ``chatharuhi serve`` (issue 21, item 2): real sockets against a real server process.

Clients that trickle a request's head or body are closed at their deadline, the open connections stay below
the open-file limit (the oldest one still sending its head makes room for a new one), a real request is
answered meanwhile, and each condition is one line in the log, not one per connection or attempt."""

from __future__ import annotations

import logging
import os
import resource
import select
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx2")

from test_server import HARUHI_REPLY  # noqa: E402

from chatharuhi.server.connections import Conditions, Limits, _loop_errors, connection_cap  # noqa: E402
from helpers.openai_stub import StubOpenAIServer  # noqa: E402

HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
BODY_HEAD = HEAD + b"Content-Length: 100000\r\n\r\n{"
GUARD_S = 60  # generous: the server's deadlines here are 1 and 2 s


def serve(stub, tmp_path, files: int, *extra: str):
    """``chatharuhi serve`` under an open-file limit of ``files``, its log in a file; (process, url, log)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "chatharuhi", "serve", "--port", str(port), "--backend", "openai", "--base-url",
           stub.base_url, "--upstream-api-key", "k", "--embedder", "hash", "--log-level", "warning", *extra]

    def limit_files():
        resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

    out = open(log, "wb")  # noqa: SIM115 - the child writes it until it ends
    proc = subprocess.Popen(cmd, env=os.environ.copy(), stdout=out, stderr=subprocess.STDOUT, preexec_fn=limit_files)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url, log, port
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "serve did not start"
        time.sleep(0.2)


def slow_clients(port: int, n: int, first: bytes) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=GUARD_S)
        s.sendall(first)
        out.append(s)
    return out


def trickle(socks: list[socket.socket], byte: bytes) -> int:
    """Send one more byte on each connection; how many the server has closed."""
    closed = 0
    for s in socks:
        try:
            s.sendall(byte)
        except OSError:
            closed += 1
    return closed


def closed_by_server(socks: list[socket.socket], wait_s: float = 0.5) -> int:
    """How many of ``socks`` the server has closed (or answered 408) by now."""
    readable, _, _ = select.select(socks, [], [], wait_s)
    closed = 0
    for s in readable:
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        closed += data == b"" or data.startswith(b"HTTP/1.1 408")
    return closed


def chat() -> dict:
    return {"model": "haruhi", "messages": [{"role": "user", "content": "你好"}]}


@pytest.fixture
def stub():
    with StubOpenAIServer(HARUHI_REPLY) as s:
        yield s


def test_trickled_heads_and_bodies_are_closed_and_a_real_request_is_answered_meanwhile(stub, tmp_path):
    proc, url, log, port = serve(stub, tmp_path, 512, "--head-timeout", "1", "--body-timeout", "2",
                                 "--max-connections", "40")
    try:
        heads = slow_clients(port, 60, HEAD)  # more than the cap: the oldest ones make room
        bodies = slow_clients(port, 5, BODY_HEAD)
        r = httpx.post(f"{url}/v1/chat/completions", json=chat(), timeout=GUARD_S)  # room is made for it
        assert r.status_code == 200 and "外星人" in r.text
        deadline = time.monotonic() + GUARD_S
        while closed_by_server(heads + bodies) < len(heads + bodies):
            trickle(heads, b"X")  # a header line that never ends
            trickle(bodies, b" ")  # a body that never ends
            assert time.monotonic() < deadline, "slow clients were still open"
            time.sleep(0.3)
        assert httpx.post(f"{url}/v1/chat/completions", json=chat(), timeout=GUARD_S).status_code == 200
    finally:
        proc.kill()
        proc.wait()
    text = log.read_text()
    assert text.count("sent no complete request head within 1 s") == 1  # once, not once per connection
    assert text.count("request body did not arrive within 2 s") == 1
    assert text.count("40 connections open (the cap)") == 1
    assert "Traceback" not in text


def test_at_the_open_file_limit_the_server_answers_and_stays_quiet(stub, tmp_path):
    """The reported attack, scaled down: more silent connections than the open-file limit (256 here)."""
    proc, url, log, port = serve(stub, tmp_path, 256, "--head-timeout", "30")
    socks = []
    try:
        for _ in range(400):
            try:
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            except OSError:
                break
        r = httpx.post(f"{url}/v1/chat/completions", json=chat(), timeout=GUARD_S)
        assert r.status_code == 200
        assert closed_by_server(socks) >= len(socks) - connection_cap(256) > 0  # the cap held
    finally:
        for s in socks:
            s.close()
        proc.kill()
        proc.wait()
    text = log.read_text()
    assert "Too many open files" not in text and "Traceback" not in text and len(text) < 2000, text[:2000]


def test_out_of_file_descriptors_is_one_line_then_a_count():
    import asyncio
    import errno

    lines = []
    conditions = Conditions(lines.append, interval_s=3600)
    loop = asyncio.new_event_loop()
    try:
        from chatharuhi.server import connections

        saved, connections.CONDITIONS = connections.CONDITIONS, conditions
        try:
            for _ in range(10_000):
                _loop_errors(loop, {"message": "socket.accept() out of system resource",
                                    "exception": OSError(errno.EMFILE, "Too many open files")})
        finally:
            connections.CONDITIONS = saved
    finally:
        loop.close()
    assert len(lines) == 1 and "out of file descriptors" in lines[0]


def test_limits_that_cannot_be_honoured_are_refused_naming_the_option():
    from chatharuhi.errors import InputError

    with pytest.raises(InputError, match="--head-timeout"):
        Limits(head_timeout_s=0).checked()
    with pytest.raises(InputError, match="--max-connections 99999999 is more than"):
        Limits(max_connections=99_999_999).checked()
    assert Limits().checked().max_connections == connection_cap() < resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    logging.getLogger("chatharuhi.server")  # the condition lines go to this logger


def test_the_demo_closes_slow_clients_too(tmp_path):
    """The web demo: Gradio runs its own uvicorn server; it is handed the same watched protocol."""
    pytest.importorskip("gradio")
    from chatharuhi.backends.scripted import ScriptedBackend
    from chatharuhi.sessions import SessionStore
    from chatharuhi.web.demo import build_app, launch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = SessionStore(tmp_path / "s.sqlite3")
    app = build_app(backend=ScriptedBackend(["春日:「好」"]), sessions=store, embedder="hash")
    launch(app, "127.0.0.1", port, block=False, warm=False, banner="demo",
           limits=Limits(head_timeout_s=1, body_timeout_s=2, max_connections=30))
    try:
        heads = slow_clients(port, 40, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        bodies = slow_clients(port, 3, b"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                       b"Content-Length: 100000\r\n\r\n-")
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=GUARD_S).status_code == 200
        deadline = time.monotonic() + GUARD_S
        while closed_by_server(heads + bodies) < len(heads + bodies):
            trickle(heads, b"X")
            trickle(bodies, b"-")
            assert time.monotonic() < deadline, "slow clients were still open"
            time.sleep(0.3)
    finally:
        app.close()
        store.close()
        from chatharuhi.server.connections import configure

        configure(Limits())  # this process's limits back to the defaults
