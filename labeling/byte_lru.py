"""A thread-safe LRU of strings bounded by the bytes it holds, not by its number of entries.

A count bound (functools.lru_cache) says nothing about memory when one entry may be a
million-character response: 4096 of them are gigabytes per process. Here every entry is
counted at its size in memory (sys.getsizeof of key and value) and the least recently used go
first once the total passes the budget. No Django: callers pass the budget in.
"""
from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Hashable

# An entry above this share of the budget is not kept: caching it would evict most of the others.
ENTRY_SHARE = 8


class ByteBoundedLRU:
    def __init__(self) -> None:
        self._entries: OrderedDict[Hashable, tuple[str, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # gthread workers render from several threads

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> str | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: Hashable, value: str, *, max_bytes: int) -> None:
        size = sys.getsizeof(key) + sys.getsizeof(value)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > max_bytes // ENTRY_SHARE:
                return
            self._entries[key] = (value, size)
            self._bytes += size
            while self._bytes > max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._bytes -= evicted

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
