"""Several ``chatharuhi serve`` processes on one store, for real: two replicas on one PostgreSQL answer
one conversation turn by turn; a replica killed with SIGKILL mid-stream loses no committed turn and
stores no half reply; ``serve --workers 2`` shares one store (SQLite or PostgreSQL) safely."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx2")

from helpers.openai_stub import StubOpenAIServer  # noqa: E402
from helpers.pg_server import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def reply_for(body: dict) -> str:
    """The stub answers each line with a reply that names it, so a stored turn shows whose reply it is."""
    last = re.sub(r"^[^「]*「(.*)」$", r"\1", body["messages"][-1]["content"], flags=re.S)  # 阿虚:「…」
    return f"春日:「收到：{last}」"


class Replica:
    """One ``python -m chatharuhi serve`` process with its own home folder (no state shared on disk)."""

    def __init__(self, tmp: Path, name: str, upstream: str, *extra: str, store: str | None = None):
        self.port = free_port()
        env = {**os.environ, "CHATHARUHI_HOME": str(tmp / name), "OPENAI_API_KEY": "x",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        args = ["--store", store] if store else []
        self.log = open(tmp / f"{name}.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chatharuhi", "serve", "--port", str(self.port), "--backend", "openai",
             "--base-url", upstream, "--embedder", "hash", "--log-level", "warning", *args, *extra],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, Path(self.log.name).read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"replica did not start: {Path(self.log.name).read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


TOKENS: dict[str, str] = {}  # session id -> its owner token (from whichever replica created it)


def new_session(url: str, **body) -> str:
    created = httpx.post(f"{url}/v1/sessions", json={"model": "haruhi", **body}, timeout=30).json()
    TOKENS[created["id"]] = created["owner_token"]
    return created["id"]


def owner(session_id: str) -> dict:
    return {"x-chatharuhi-session-token": TOKENS[session_id]}


def turn(url: str, session_id: str, text: str) -> str:
    """One streamed turn; returns the reply the client saw (raises if the stream did not finish)."""
    body = {"model": "haruhi", "stream": True, "session_id": session_id,
            "messages": [{"role": "user", "content": text}]}
    parts, done = [], False
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30, headers=owner(session_id)) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: {"):
                data = json.loads(line[6:])
                assert "error" not in data, data
                parts.append(data["choices"][0]["delta"].get("content") or "")
    assert done
    return "".join(parts)


def export(url: str, session_id: str) -> list[dict]:
    r = httpx.get(f"{url}/v1/sessions/{session_id}", timeout=10, headers=owner(session_id))
    assert r.status_code == 200, r.text
    return r.json()["turns"]


@pytest.fixture
def upstream():
    with StubOpenAIServer(reply_for, chunk_size=2) as stub:
        yield stub


def test_two_replicas_one_conversation_and_a_sigkill_mid_stream(pg_url, upstream, tmp_path):
    a = Replica(tmp_path, "a", upstream.base_url, store=pg_url)
    b = Replica(tmp_path, "b", upstream.base_url, store=pg_url)
    try:
        a.wait_ready()
        b.wait_ready()
        sid = new_session(a.url, user_role="阿虚")  # its owner token, made on a, must work on b too
        said = []
        for i, replica in enumerate([a, b, a, b]):  # the conversation alternates between the replicas
            text = f"第{i}句话"
            assert turn(replica.url, sid, text) == f"收到：{text}"
            said.append(text)
            sent = [m["content"] for m in upstream.requests[-1].body["messages"]]
            assert all(any(f"收到：{t}" in c for c in sent) for t in said[:-1])  # the other replica's turns too
        assert [t["text"] for t in export(b.url, sid)] == said

        # replica a dies mid-stream (SIGKILL: no cleanup at all); the client retries on b
        upstream.chunk_delay = 0.05
        body = {"model": "haruhi", "stream": True, "session_id": sid,
                "messages": [{"role": "user", "content": "第4句话：慢慢说"}]}
        got = 0
        with pytest.raises((httpx.HTTPError, AssertionError)):
            with httpx.stream("POST", f"{a.url}/v1/chat/completions", json=body, timeout=30,
                              headers=owner(sid)) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if line.startswith("data: {") and "content" in line:
                        got += 1
                        if got == 3:
                            os.killpg(a.proc.pid, signal.SIGKILL)
                raise AssertionError("the stream of a killed replica ended cleanly")
        assert got >= 3 and a.proc.wait(10) == -signal.SIGKILL
        assert [t["text"] for t in export(b.url, sid)] == said  # nothing of the broken turn was stored
        upstream.chunk_delay = 0.0
        assert turn(b.url, sid, "第4句话：慢慢说") == "收到：第4句话：慢慢说"
        turns = export(b.url, sid)
        assert [t["text"] for t in turns] == [*said, "第4句话：慢慢说"]
        assert [t["reply"] for t in turns] == [f"收到：{t['text']}" for t in turns]  # whole replies only
        assert all(len(t["alternatives"]) == 1 for t in turns)
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_workers_share_one_store(upstream, tmp_path, store, request):
    url = request.getfixturevalue("pg_url") if store == "postgresql" else None  # None: the home's SQLite file
    server = Replica(tmp_path, "w", upstream.base_url, "--workers", "2", store=url)
    try:
        server.wait_ready()
        sids = [new_session(server.url) for _ in range(6)]

        def talk(sid: str) -> None:
            for i in range(4):
                assert turn(server.url, sid, f"{sid[:4]}-{i}") == f"收到：{sid[:4]}-{i}"

        with concurrent.futures.ThreadPoolExecutor(6) as ex:
            list(ex.map(talk, sids))
        for sid in sids:
            assert [t["text"] for t in export(server.url, sid)] == [f"{sid[:4]}-{i}" for i in range(4)]
        import psutil

        assert len(psutil.Process(server.proc.pid).children(recursive=True)) >= 2  # really two workers
    finally:
        server.stop()


def test_serve_refuses_to_start_when_postgres_is_down(capsys):
    from chatharuhi.cli import main

    url = f"postgresql://bob:hunter2@127.0.0.1:{free_port()}/chat"
    assert main(["serve", "--port", str(free_port()), "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1",
                 "--embedder", "hash", "--store", url]) == 2
    err = capsys.readouterr().err
    assert "postgresql://bob:***@127.0.0.1" in err and "unreachable" in err and "hunter2" not in err


def test_postgres_lost_mid_run_is_a_503_then_recovers(postgres_server, pg_url, upstream):
    from test_server import make_app, running

    with running(make_app(upstream, sessions_path=pg_url)) as url:
        sid = new_session(url)
        assert turn(url, sid, "一") == "收到：一"
        postgres_server.stop("immediate")
        try:
            body = {"model": "haruhi", "session_id": sid, "messages": [{"role": "user", "content": "二"}]}
            r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30, headers=owner(sid))
            assert r.status_code == 503, r.text
            error = r.json()["error"]
            assert error["code"] == "session_store_unavailable" and "s3cret-pw" not in error["message"]
        finally:
            postgres_server.start()
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/v1/sessions/{sid}", timeout=30, headers=owner(sid)).status_code != 200:
            assert time.monotonic() < deadline, "the server did not recover when PostgreSQL came back"
            time.sleep(0.2)
        assert turn(url, sid, "二") == "收到：二"
        assert [t["text"] for t in export(url, sid)] == ["一", "二"]  # nothing half-written in between


def test_the_deployment_compose_example_runs_our_real_options():
    """The deployment page's example: valid YAML, a serve command our parser accepts, variables we read."""
    yaml = pytest.importorskip("yaml")
    import shlex

    from chatharuhi import config
    from chatharuhi.cli import build_parser
    from chatharuhi.server.run import ENV_API_KEY

    readme = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```yaml\n(.*?)```", readme, flags=re.S)
    services = yaml.safe_load(block)["services"]
    assert {"postgres", "vllm", "chatharuhi"} <= set(services)
    app = services["chatharuhi"]
    serve = shlex.split(app["command"].split("&&", 1)[1].rstrip('"'))
    assert serve[:2] == ["chatharuhi", "serve"]
    args = build_parser().parse_args(serve[1:])  # an unknown option would exit here
    assert args.workers >= 1 and args.host == "0.0.0.0"
    known = {v for k, v in vars(config).items() if k.startswith("ENV_")} | {ENV_API_KEY}
    assert set(app["environment"]) <= known, set(app["environment"]) - known
    url = app["environment"]["CHATHARUHI_STORE"]
    pg = services["postgres"]["environment"]
    assert url == f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}"
    assert "--enable-lora" in services["vllm"]["command"] and "--lora-modules" in services["vllm"]["command"]


def test_create_app_takes_the_store_from_chatharuhi_store(monkeypatch, upstream, pg_url):
    from test_server import make_app

    from chatharuhi.errors import SessionError

    monkeypatch.setenv("CHATHARUHI_STORE", f"postgresql://bob:hunter2@127.0.0.1:{free_port()}/x")
    with pytest.raises(SessionError, match=r"bob:\*\*\*@.*unreachable") as info:
        make_app(upstream)  # PostgreSQL down at start: no app, and no password in the message
    assert "hunter2" not in str(info.value)
    monkeypatch.setenv("CHATHARUHI_STORE", pg_url)
    app = make_app(upstream)
    assert type(app.state.pool.bot_options["vector_cache"]).__name__ == "PostgresVectorCache"
