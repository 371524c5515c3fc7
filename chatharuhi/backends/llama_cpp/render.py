"""Counting a chat prompt exactly as the llama.cpp worker reads it (for ``backend.py``).

The server's own chat template (``/apply-template``) and tokenizer (``/tokenize``) give the token ids it
will read, so the packer fills a window that is really that size. Counts are memoised per text; the
packer's small per-role probes are memoised per message list.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

from ...errors import BackendError
from ...prompting.memo import BytesMemo
from ...types import Message

if TYPE_CHECKING:
    from .backend import LlamaCppBackend


class LlamaCppCounter:
    """Exact counts for a GGUF model: the rendered chat prompt tokenized by the model's own tokenizer.

    Not additive: a chat template can inject text (SmolLM2 adds a default system prompt when the
    first message is not a system message), so the packer recounts the packed messages once.
    """

    additive = False

    def __init__(self, backend: "LlamaCppBackend"):
        self._backend = backend
        self.id = f"llama_cpp:{backend.model_path.name}"
        self._memo: BytesMemo[int] = BytesMemo()

    def count(self, text: str) -> int:
        """Tokens of a bare text (no BOS, special tokens read as text)."""
        n = self._memo.get(text)
        if n is None:
            n = len(self._backend.tokenize(text))
            self._memo.put(text, n)
        return n

    def count_messages(self, messages: Sequence[Message]) -> int:
        """Tokens of the whole prompt exactly as sent, generation prompt included."""
        if len(messages) <= 1:  # the packer's per-role probes: the same few lists every turn
            return self._small(tuple((m.role, m.content) for m in messages))
        return len(self._backend.render(messages))

    @lru_cache(maxsize=64)  # noqa: B019 - one counter per backend, a handful of keys
    def _small(self, key: tuple[tuple[str, str], ...]) -> int:
        try:
            return len(self._backend.render([Message(r, c) for r, c in key]))
        except BackendError:  # templates that insist on alternating roles reject a lone probe
            return sum(self.count(c) + 4 for _, c in key) + 4
