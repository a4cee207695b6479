"""Real threads, each with its own database connection, started together: the tests' one way to race."""
from __future__ import annotations

import threading
from typing import Any, Callable

from django.db import connections


def run_threads(n: int, work: Callable[[int], Any]) -> list:
    """work(i) for i in range(n) in n threads released at once by a barrier; their results in order.
    Any exception in a thread fails the caller's test (each thread closes its own connections)."""
    results, errors = [None] * n, []
    barrier = threading.Barrier(n)

    def run(i):
        try:
            barrier.wait()
            results[i] = work(i)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results
