"""Background work that outlives a database restart: a retrying call and a heartbeat thread.

A worker thread keeps its database connection for the whole task. When Postgres restarts (or a
failover, or a killed backend), that connection is dead for good: Django only drops broken
connections at the start and end of a request or task, so every later query of the thread fails
with OperationalError/InterfaceError. `db_retry` closes the thread's connection after such an
error and tries again with backoff, for a bounded time; `heartbeats` is the thread that keeps a
long job visibly alive (training runs, export jobs) and beats through an outage.

Both bounds follow PAIRWISE_HEARTBEAT_STALE, the age at which the reapers fail a silent job: a
beat every quarter of it, and retries for at most half of it, so a short outage (a restart takes
seconds) is ridden out and a beat still lands before the reaper would take the job for dead.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

logger = logging.getLogger("pairwise.db")

DB_ERRORS = (OperationalError, InterfaceError)
FIRST_BACKOFF_S = 0.25
MAX_BACKOFF_S = 2.0

T = TypeVar("T")


def _stale_s() -> float:
    return settings.PAIRWISE_HEARTBEAT_STALE.total_seconds()


def heartbeat_interval_s() -> float:
    return min(30.0, max(0.5, _stale_s() / 4))


def db_retry_window_s() -> float:
    """How long a heartbeat or progress report retries a lost database before giving up this once."""
    return max(1.0, _stale_s() / 2)


def db_retry(fn: Callable[[], T], *, what: str, within_s: float | None = None) -> T:
    """fn() on this thread's connection; after a connection error, close the connection and call
    fn() again (a fresh connection), with backoff, until within_s has passed; then the error is
    raised. fn must be safe to repeat: a write whose commit was lost with the connection runs again.
    Inside a transaction nothing is retried: the transaction is lost and its owner decides."""
    within_s = db_retry_window_s() if within_s is None else within_s
    deadline, delay, attempt = time.monotonic() + within_s, FIRST_BACKOFF_S, 1
    while True:
        try:
            return fn()
        except DB_ERRORS as exc:
            if connection.in_atomic_block:
                raise
            connection.close()  # the next query of this thread connects again
            if time.monotonic() + delay > deadline:
                raise
            logger.warning("%s: database unavailable (attempt %s, retrying in %.2fs): %s",
                           what, attempt, delay, str(exc).strip())
            time.sleep(delay)
            delay, attempt = min(MAX_BACKOFF_S, delay * 2), attempt + 1


def db_connection_ensure(*, what: str) -> None:
    """Before a write that must not run twice (db_retry could repeat a commit whose answer was lost
    with the connection): make sure this thread's connection is alive, replacing one the database
    dropped since it was last used (a restart during a long model save), with db_retry's patience.
    Inside a transaction it does nothing: the connection is the transaction's."""
    if connection.in_atomic_block:
        return

    def ping() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    db_retry(ping, what=what)


class _Heartbeat(threading.Thread):
    """Calls beat() every interval until stopped. A daemon: it dies with the process, so a killed
    worker goes silent and the reaper finds its job."""

    def __init__(self, name: str, beat: Callable[[], object], interval: float):
        super().__init__(name=name, daemon=True)
        self.beat, self.interval, self.stopped = beat, interval, threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.interval):
                try:
                    db_retry(self.beat, what=self.name)
                except Exception:  # a longer outage must not kill the beat; the next one tries again
                    logger.exception("%s failed", self.name)
        finally:
            connection.close()


class heartbeats:
    """Context manager: beat() every heartbeat_interval_s() on a thread of its own (with its own
    database connection, so a busy or broken connection of the caller does not stop it)."""

    def __init__(self, *, name: str, beat: Callable[[], object], interval: float | None = None):
        self.thread = _Heartbeat(name, beat, heartbeat_interval_s() if interval is None else interval)

    def __enter__(self) -> threading.Thread:
        self.thread.start()
        return self.thread

    def __exit__(self, *exc) -> bool:
        self.thread.stopped.set()
        self.thread.join(timeout=10)
        return False
