"""How many chats a local model can hold at once: its KV cache per token (from the GGUF header) against memory.

Each of llama.cpp's ``n_parallel`` slots keeps its own ``n_ctx`` tokens of keys and values, allocated when
the worker starts. A token costs ``2 (K and V) x layers x kv_heads x head_dim x 2 bytes`` (f16): 23 KB for
SmolLM2-135M, 57 KB for Qwen2.5-7B. The default is as many slots as ``LOCAL_KV_MEMORY_SHARE`` of the memory
the machine has free can hold, from 1 to ``DEFAULT_LOCAL_MAX_PARALLEL``. The header is read here without
any native code (a few kilobytes, never the tensors).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, BinaryIO

from ...config import DEFAULT_LOCAL_MAX_PARALLEL, LOCAL_KV_MEMORY_SHARE

_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
MAX_HEADER_KEYS = 10_000  # a GGUF header with more keys than this is not one we read


class _Reader:
    def __init__(self, f: BinaryIO):
        self.f = f

    def read(self, fmt: str) -> Any:
        size = struct.calcsize("<" + fmt)
        data = self.f.read(size)
        if len(data) != size:
            raise ValueError("the file ends inside its header")
        return struct.unpack("<" + fmt, data)[0]

    def string(self) -> str:
        n = self.read("Q")
        if n > 1 << 24:
            raise ValueError("a header string longer than 16 MB")
        data = self.f.read(n)
        if len(data) != n:
            raise ValueError("the file ends inside its header")
        return data.decode("utf-8", "replace")

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.read(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, n = self.read("I"), self.read("Q")
            if item in _SCALARS:  # token lists and scores: skipped, never kept
                self.f.seek(n * struct.calcsize("<" + _SCALARS[item]), os.SEEK_CUR)
                return None
            for _ in range(n):
                self.value(item)
            return None
        raise ValueError(f"unknown header value type {kind}")


def gguf_header(path: str | os.PathLike) -> dict[str, Any]:
    """The scalar and string keys of a GGUF file's header (arrays are skipped); ``ValueError`` if it is not GGUF."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError("not a GGUF file (no GGUF magic)")
        r = _Reader(f)
        version = r.read("I")
        if version < 2:
            raise ValueError(f"GGUF version {version} is too old")
        r.read("Q")  # tensor count
        n_keys = r.read("Q")
        if n_keys > MAX_HEADER_KEYS:
            raise ValueError(f"{n_keys} header keys")
        fields: dict[str, Any] = {}
        for _ in range(n_keys):
            key = r.string()
            value = r.value(r.read("I"))
            if value is not None:
                fields[key] = value
        return fields


def kv_bytes_per_token(header: dict[str, Any]) -> int | None:
    """Bytes of f16 keys and values one token takes in every layer, or None when the header does not say."""
    arch = header.get("general.architecture")
    layers, width = header.get(f"{arch}.block_count"), header.get(f"{arch}.embedding_length")
    heads = header.get(f"{arch}.attention.head_count")
    if not all(isinstance(v, int) and v > 0 for v in (layers, width, heads)):
        return None
    kv_heads = header.get(f"{arch}.attention.head_count_kv") or heads
    key = header.get(f"{arch}.attention.key_length") or width // heads
    value = header.get(f"{arch}.attention.value_length") or width // heads
    return int(layers * kv_heads * (key + value) * 2)


def available_memory() -> int | None:
    """Bytes the machine can give without swapping (Linux ``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def default_parallel(model: Path, n_ctx: int, memory: int | None = None) -> int:
    """Slots of ``n_ctx`` tokens that ``LOCAL_KV_MEMORY_SHARE`` of the free memory holds (1 when unknown)."""
    try:
        per_token = kv_bytes_per_token(gguf_header(model))
    except (OSError, ValueError):
        return 1  # the worker's own load says what is wrong with the file
    memory = available_memory() if memory is None else memory
    if per_token is None or memory is None:
        return 1
    budget = max(0, memory - model.stat().st_size) * LOCAL_KV_MEMORY_SHARE
    return max(1, min(DEFAULT_LOCAL_MAX_PARALLEL, int(budget // (per_token * n_ctx))))
