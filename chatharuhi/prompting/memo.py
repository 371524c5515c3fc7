"""A memo bounded by bytes, not entries: texts of any size can be remembered without memory growing
without limit (an entry-bounded memo of 65,536 texts held gigabytes once the texts were large)."""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")

MEMO_MAX_BYTES = 32 << 20  # bytes of remembered keys per memo (scenes and recent turns fit many times over)
MEMO_MAX_ITEM_BYTES = 256 << 10  # a longer text is not remembered: it is rarely seen twice and would evict many


class BytesMemo(Generic[V]):
    """A thread-safe least-recently-used ``str -> value`` map whose keys total at most ``max_bytes``."""

    def __init__(self, max_bytes: int = MEMO_MAX_BYTES, max_item_bytes: int = MEMO_MAX_ITEM_BYTES):
        self.max_bytes, self.max_item_bytes = max_bytes, min(max_item_bytes, max_bytes)
        self.bytes = 0
        self._items: OrderedDict[str, V] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> V | None:
        """The remembered value, or ``None``."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: V) -> None:
        """Remember ``value`` unless the key alone is over ``max_item_bytes``; evict the oldest to fit."""
        size = sys.getsizeof(key)
        if size > self.max_item_bytes:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self.bytes += size
            while self.bytes > self.max_bytes:
                old, _ = self._items.popitem(last=False)
                self.bytes -= sys.getsizeof(old)
