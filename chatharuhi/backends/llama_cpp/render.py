"""Rendering and counting a chat prompt exactly as llama-cpp-python would send it (for ``llama_cpp.py``).

llama-cpp-python's chat handler (the GGUF's template, or a named ``chat_format``) is called with a
``_Recorder`` standing in for the model: it tokenizes for real and records the completion call instead
of running it, so the token ids counted, and then generated from, are exactly those
``create_chat_completion`` would send. ``LlamaCppCounter`` counts with it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any, Sequence

from ...errors import BackendError
from ...prompting.memo import BytesMemo
from ...types import Message

if TYPE_CHECKING:
    from .backend import LlamaCppBackend

CONSTRAINING_SETTINGS = ("grammar", "logits_processor", "logit_bias")


class _Captured(Exception):
    """Raised by the recorder to stop llama-cpp's chat handler once the prompt is known."""

    def __init__(self, tokens: list[int], stop: list[str], stopping_criteria: Any, settings: dict[str, Any]):
        super().__init__("captured")
        self.tokens, self.stop, self.stopping_criteria = tokens, stop, stopping_criteria
        self.settings = settings  # the handler's other completion arguments: sampling defaults, a grammar


class _Recorder:
    """Stands in for ``Llama`` inside a chat handler: tokenizes for real, records the completion call."""

    def __init__(self, llm: Any):
        self._llm = llm
        self.verbose = False

    def tokenize(self, *args: Any, **kwargs: Any) -> list[int]:
        return self._llm.tokenize(*args, **kwargs)

    def create_completion(self, prompt: Any, stop: Any = None, stopping_criteria: Any = None,
                          **settings: Any) -> Any:
        stop = [] if stop is None else [stop] if isinstance(stop, str) else list(stop)
        raise _Captured(list(prompt), stop, stopping_criteria, settings)

    def __getattr__(self, name: str) -> Any:  # anything else a handler asks for (metadata, token ids)
        return getattr(self._llm, name)


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
        return len(self._backend.render(messages).tokens)

    @lru_cache(maxsize=64)  # noqa: B019 - one counter per backend, a handful of keys
    def _small(self, key: tuple[tuple[str, str], ...]) -> int:
        try:
            return len(self._backend.render([Message(r, c) for r, c in key]).tokens)
        except BackendError:  # templates that insist on alternating roles reject a lone probe
            return sum(self.count(c) + 4 for _, c in key) + 4
