"""A scripted backend for tests: replies from a list or a function, streamed in small chunks."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Sequence

from ..prompting.tokens import TokenCounter
from ..types import Message
from .base import Backend

Reply = str | Callable[[Sequence[Message]], str]


class ScriptedBackend(Backend):
    """Replies in turn from ``replies`` (cycling), or echoes the last user message; records every call."""

    name = "scripted"
    # What any built-in backend honours per call: a test fake accepts (and records) those, refuses typos.
    call_options = frozenset({"adapter", "max_tokens", "min_p", "model", "prefill", "repeat_penalty", "seed", "stop",
                              "temperature", "top_k", "top_p"})

    def __init__(
        self,
        replies: Iterable[Reply] | None = None,
        chunk_size: int = 3,
        fail_after: int | None = None,
        counter: TokenCounter | None = None,
        context_window: int | None = None,
    ):
        self.replies = list(replies or [])
        self.chunk_size = max(1, chunk_size)
        self.fail_after = fail_after  # raise after this many chunks: simulates a dropped stream
        self.calls: list[list[Message]] = []
        self.call_options_seen: list[dict[str, Any]] = []  # the options of each call, in order
        self._counter = counter
        if context_window:
            self.context_window = context_window

    def _reply_for(self, messages: Sequence[Message]) -> str:
        if not self.replies:
            last = next((m.content for m in reversed(messages) if m.role == "user"), "")
            return f"echo: {last}"
        reply = self.replies[(len(self.calls) - 1) % len(self.replies)]
        return reply(messages) if callable(reply) else reply

    def stream(self, messages: Sequence[Message], **options: Any) -> Iterator[str]:
        """Yield the scripted reply a few characters at a time."""
        self.check_call_options(options)
        self.calls.append(list(messages))
        self.call_options_seen.append(dict(options))
        text = self._reply_for(messages)
        for n, start in enumerate(range(0, len(text), self.chunk_size)):
            if self.fail_after is not None and n >= self.fail_after:
                raise ConnectionError("scripted stream dropped")
            yield text[start : start + self.chunk_size]

    def token_counter(self) -> TokenCounter:
        """The counter given at construction, else tiktoken."""
        return self._counter or super().token_counter()
