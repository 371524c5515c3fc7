"""``pull_model``: download a catalogue model (or adapter) with huggingface_hub, resumably, and verify its sha256.

For each file: ask the hub (``HF_ENDPOINT``, read now) for the file's metadata (the sha256 it
advertises, size, download location), refuse if that sha256 differs from the pinned one, check the
free disk space, then stream the bytes with huggingface_hub's ``http_get`` (its progress bar, its
retries on a dropped connection, HTTP ``Range`` resume) into ``.partial/``. A file that matches its
sha256 is renamed into the model's folder; the manifest is written last.

Why not ``hf_hub_download``: since huggingface_hub 1.x it downloads into a temporary file unique to
the process and deletes it on any failure, so an interrupted pull restarts from zero, and it never
checks the sha256 of what it received. Here an interrupted pull (network drop, Ctrl-C, kill -9)
keeps its bytes and the next pull continues from them.

Nothing a mirror sends is taken on trust (``hub_http``): a file's bytes stop at its pinned size, and every
other answer (metadata, an error page), huggingface_hub's own reads included, at a small limit; a mirror
that sends more is named as misbehaving and the partial file is removed.

Failures are ``ModelDownloadError``s that say what to do. A wrong hash or a full disk deletes the
partial file; an interruption keeps it for the next pull. One process pulls a model at a time (a
file lock); a second one waits, then finds the model installed.
"""

from __future__ import annotations

import errno
import inspect
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

from ..config import (
    DEFAULT_HF_ENDPOINT,
    DEFAULT_HUB_TIMEOUT_S,
    DISK_MARGIN_BYTES,
    ENV_HF_ENDPOINT,
    ENV_HF_OFFLINE,
    PULL_LOCK_POLL_S,
)
from ..errors import BackendUnavailable, ModelDownloadError, ModelError
from ..options import strict
from .catalog import SHA256_RE, ModelEntry, ModelFile, find_model
from .embedded import sha256_file
from .hub_http import ERROR_BODY_MAX_BYTES, MirrorMisbehaves, install, limited
from .store import Installed, format_size, installed, lock_file, model_dir, partial_dir, write_manifest

INSTALL_HINT = "pip install 'chatharuhi[embedded]'  (huggingface-hub and filelock)"
DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
GGUF_MAGIC = b"GGUF"
logger = logging.getLogger("chatharuhi")

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _hub() -> Any:
    try:
        import huggingface_hub
        from huggingface_hub import file_download
    except ImportError as exc:
        raise BackendUnavailable(f"pulling models needs huggingface_hub: {INSTALL_HINT} ({exc})") from None
    return huggingface_hub, file_download


def _endpoint() -> str:
    if os.environ.get(ENV_HF_OFFLINE, "").strip().lower() in {"1", "true", "yes", "on"}:
        raise ModelDownloadError(f"{ENV_HF_OFFLINE} is set, so nothing may be downloaded; unset it to pull a model")
    return (os.environ.get(ENV_HF_ENDPOINT) or DEFAULT_HF_ENDPOINT).rstrip("/")


@strict
def pull_model(name: str, *, progress: bool = True, log: Log | None = _stderr) -> Path:
    """Download the model or adapter ``name`` (resuming an interrupted pull) and return what to load (see
    ``Installed.path``)."""
    from filelock import FileLock, Timeout

    entry = find_model(name)
    say = log or (lambda _m: None)
    if entry.builtin:
        from .store import model_path

        return model_path(entry.name)  # nothing to pull: verify the installed package instead
    done = installed(entry)
    if done is not None:
        say(f"{entry.name} is already pulled: {done.path}")
        return done.path
    endpoint = _endpoint()
    lock = FileLock(lock_file(entry.name), timeout=-1)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        say(f"another process is pulling {entry.name}; waiting for it to finish (Ctrl-C stops waiting)")
        lock.acquire(poll_interval=PULL_LOCK_POLL_S)
    try:
        done = installed(entry)  # the other process may have finished it
        if done is not None:
            say(f"{entry.name} is already pulled: {done.path}")
            return done.path
        return _pull_locked(entry, endpoint, progress, say).path
    finally:
        lock.release()


def _pull_locked(entry: ModelEntry, endpoint: str, progress: bool, say: Log) -> Installed:
    folder = model_dir(entry.name)
    say(f"pulling {entry.name}: {entry.title} from {endpoint}/{entry.repo} ({format_size(entry.size)}, "
        f"licence {entry.licence})")
    records: dict[str, dict] = {}
    for file in entry.files:
        final = folder / file.filename
        sha256 = file.sha256
        if sha256 and final.is_file() and sha256_file(final) == sha256:  # a crash after the rename
            records[file.filename] = _record(final, sha256)
            continue
        part, sha256 = _download(entry, file, endpoint, progress)
        folder.mkdir(parents=True, exist_ok=True)
        os.replace(part, final)
        records[file.filename] = _record(final, sha256)
    write_manifest(entry, records)
    done = installed(entry)
    if done is None:  # pragma: no cover - only if the folder is changed under us
        raise ModelError(f"{folder}: the pulled files vanished while being installed; pull again")
    say(f"pulled {entry.name}: {done.path}")
    if entry.is_adapter:
        say(_adapter_hint(entry))
    return done


def _adapter_hint(entry: ModelEntry) -> str:
    """How to use a pulled adapter, and the pull its base still needs (an adapter never pulls its base)."""
    from .catalog import catalog
    from .store import not_pulled_message

    hint = (f"use it from a character's character.toml: [adapter] name = {entry.name!r} "
            f"(base {entry.base!r})")
    base = catalog().get((entry.base or "").lower())
    if base is not None and not base.builtin and installed(base) is None:
        hint += f"; its base {not_pulled_message(base)}"
    return hint


def _record(path: Path, sha256: str) -> dict:
    st = path.stat()
    return {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _metadata(hub: Any, entry: ModelEntry, file: ModelFile, endpoint: str) -> Any:
    url = hub.hf_hub_url(entry.repo, file.filename, revision=entry.revision or None, endpoint=endpoint)
    try:
        return hub.get_hf_file_metadata(url, timeout=DEFAULT_HUB_TIMEOUT_S, endpoint=endpoint,
                                        headers=limited({}, ERROR_BODY_MAX_BYTES))
    except MirrorMisbehaves:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes one clear error
        raise _network_error(exc, f"{endpoint}/{entry.repo}", entry) from None


def _network_error(exc: BaseException, where: str, entry: ModelEntry) -> ModelDownloadError:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status == 404:
        return ModelDownloadError(f"{where} has no {', '.join(f.filename for f in entry.files)} at revision "
                                  f"{entry.revision or 'main'} (HTTP 404): the model table may be out of date")
    if status in (401, 403):
        return ModelDownloadError(f"{where} refused the download (HTTP {status}); if the repository is gated, "
                                  "accept its licence on the hub and set HF_TOKEN")
    if status is not None:
        return ModelDownloadError(f"{where} answered HTTP {status}; try again later")
    if type(exc).__name__ == "OfflineModeIsEnabled":
        return ModelDownloadError(f"{ENV_HF_OFFLINE} was set when huggingface_hub was imported; unset it to pull")
    return ModelDownloadError(f"cannot reach {where} ({type(exc).__name__}: {exc}); check the network, "
                              f"or set {ENV_HF_ENDPOINT} to a reachable hub mirror")


def _expected(entry: ModelEntry, file: ModelFile, meta: Any) -> tuple[str, int]:
    advertised = (meta.etag or "").lower()
    advertised = advertised if SHA256_RE.fullmatch(advertised) else None
    sha256 = file.sha256 or advertised
    if sha256 is None:
        raise ModelDownloadError(f"{entry.repo}/{file.filename}: no sha256 is pinned and the hub advertises none "
                                 f"(etag {meta.etag!r}: small files such as a PEFT adapter_config.json are kept "
                                 "outside Git LFS and have none); refusing an unverifiable download: pin its sha256 "
                                 f"in {entry.name}'s files in models.toml")
    if file.sha256 and advertised and advertised != file.sha256:
        raise ModelDownloadError(f"{entry.repo}/{file.filename}: the hub advertises sha256 {advertised} but "
                                 f"chatharuhi pins {file.sha256}; refusing to download bytes that would not match")
    size = file.size or meta.size
    if size is None:
        raise ModelDownloadError(f"{entry.repo}/{file.filename}: the hub gave no file size; try again later")
    if file.size and meta.size and meta.size != file.size:
        raise ModelDownloadError(f"{entry.repo}/{file.filename}: the hub says {meta.size} bytes but chatharuhi "
                                 f"pins {file.size}; refusing the download")
    return sha256, size


def _download(entry: ModelEntry, file: ModelFile, endpoint: str, progress: bool) -> tuple[Path, str]:
    hub, file_download = _hub()
    install(hub)
    meta = _metadata(hub, entry, file, endpoint)
    sha256, size = _expected(entry, file, meta)
    folder = partial_dir(entry.name)
    part = folder / f"{file.filename}.{sha256}.part"
    for stale in folder.glob(f"{file.filename}.*.part"):  # another revision's bytes
        if stale != part:
            stale.unlink(missing_ok=True)
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    _check_space(part, size - have, entry)
    # one answer may hold the whole file (a server that ignores Range starts again); the sink stops at the size
    kwargs: dict[str, Any] = {"resume_size": have, "headers": limited(hub.utils.build_hf_headers(), size),
                              "expected_size": size, "displayed_filename": file.filename}
    if not progress and "tqdm_class" in inspect.signature(file_download.http_get).parameters:
        kwargs["tqdm_class"] = _silent_tqdm(hub)
    try:
        with open(part, "ab") as fh:
            sink = _HashingFile(fh, part if have else None, size)
            file_download.http_get(meta.location, sink, **kwargs)
    except MirrorMisbehaves as exc:
        part.unlink(missing_ok=True)
        raise MirrorMisbehaves(f"{entry.repo}/{file.filename}: {exc} (the partial file was removed)") from None
    except OSError as exc:
        if exc.errno in DISK_FULL:
            part.unlink(missing_ok=True)
            raise ModelDownloadError(f"cannot write {part.name} in {folder} ({exc.strerror}: the disk or your "
                                     f"quota is full); free {format_size(size)} there or set CHATHARUHI_HOME to "
                                     "a larger disk, then pull again; the partial file was removed") from None
        raise _interrupted(exc, part, size, entry) from None
    except Exception as exc:  # noqa: BLE001 - a dropped connection after huggingface_hub's own retries
        raise _interrupted(exc, part, size, entry) from None
    got = part.stat().st_size
    with open(part, "rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC and (not entry.is_adapter or file.filename.lower().endswith(".gguf")):
        part.unlink(missing_ok=True)
        raise ModelDownloadError(f"{entry.repo}/{file.filename} is not a GGUF file (it starts with {magic!r}); "
                                 "chatharuhi runs GGUF models with llama.cpp. The file was removed")
    actual = sink.hexdigest() or sha256_file(part)
    if actual != sha256:
        part.unlink(missing_ok=True)
        raise ModelDownloadError(f"{entry.repo}/{file.filename}: the downloaded file ({got} bytes) has sha256 "
                                 f"{actual}, expected {sha256}; the file was removed, pull again (if it keeps "
                                 "failing, the mirror serves other bytes)")
    return part, sha256


class _HashingFile:
    """The partial file as ``http_get`` sees it: hashes what is written, so no second pass reads it back.

    Resumed files hash their existing bytes first. If the writer seeks or truncates (a server that
    ignored ``Range``), the running hash is abandoned and the file is hashed from disk afterwards.
    """

    def __init__(self, fh: Any, existing: Path | None, limit: int):
        import hashlib

        self._fh, self._limit = fh, limit
        self._digest: Any = hashlib.sha256()
        if existing is not None:
            with open(existing, "rb") as f:
                while block := f.read(1 << 20):
                    self._digest.update(block)

    def write(self, data: bytes) -> int:
        if self._fh.tell() + len(data) > self._limit:  # the file is pinned at this size: not a byte more
            raise MirrorMisbehaves(f"the mirror sent more than the pinned {self._limit:,} bytes: it misbehaves. "
                                   "Nothing past that was written; try again later, or set HF_ENDPOINT to another "
                                   "mirror")
        if self._digest is not None:
            self._digest.update(data)
        return self._fh.write(data)

    def seek(self, *args: Any) -> int:
        self._digest = None
        return self._fh.seek(*args)

    def truncate(self, *args: Any) -> int:
        self._digest = None
        return self._fh.truncate(*args)

    def hexdigest(self) -> str | None:
        """The sha256 of the whole file, or None when it must be read back."""
        return None if self._digest is None else self._digest.hexdigest()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


def _check_space(part: Path, needed: int, entry: ModelEntry) -> None:
    free = shutil.disk_usage(part.parent).free
    if free < needed + DISK_MARGIN_BYTES:
        part.unlink(missing_ok=True)
        raise ModelDownloadError(f"not enough disk space for {entry.name}: it needs {format_size(needed)} more "
                                 f"but {part.parent} has {format_size(free)} free; free some space or set "
                                 "CHATHARUHI_HOME to a larger disk")


def _resume_hint(part: Path, size: int, entry: ModelEntry) -> str:
    got = part.stat().st_size if part.exists() else 0
    return (f"pull of {entry.name} stopped at {format_size(got)} of {format_size(size)}; run "
            f"`chatharuhi models pull {entry.name}` again to resume")


def _interrupted(exc: BaseException, part: Path, size: int, entry: ModelEntry) -> ModelDownloadError:
    if getattr(getattr(exc, "response", None), "status_code", None) is not None:
        error = str(_network_error(exc, entry.repo, entry))
    else:
        error = f"the download of {entry.name} broke off ({type(exc).__name__}: {exc})"
    return ModelDownloadError(f"{error}; {_resume_hint(part, size, entry)}")


def _silent_tqdm(hub: Any) -> type:
    base = hub.utils.tqdm

    class Silent(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent
