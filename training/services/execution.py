"""How a run task executes: the frame around every task body (run_execute), the progress reporter
the trainers call, and the heartbeat thread that keeps a long step visibly alive. A SIGKILLed
worker goes silent, and the reaper (training.services.runs.runs_reap_stale) finds it."""
from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import Any, Callable

from django.conf import settings
from django.db import connection

from training.models import TrainingRun
from training.services.runs import RunAborted, run_fail, run_heartbeat, run_start

logger = logging.getLogger(__name__)

REPORT_EVERY_S = 2.0


def run_execute(*, run_id: int, worker: str, what: str, body: Callable[[TrainingRun], Any]) -> Any:
    """The frame of every run task: QUEUED -> RUNNING (or return None on a redelivery), heartbeats
    while body runs, and errors recorded on the run, never raised (there is nothing to retry)."""
    run = run_start(run_id=run_id, worker=worker)
    if run is None:
        logger.info("run %s is not queued; nothing to do", run_id)
        return None
    try:
        with run_heartbeats(run_id=run.pk):
            return body(run)
    except RunAborted as exc:
        logger.warning("%s", exc)
        return None
    except BaseException as exc:
        run_fail(run_id=run.pk, error=f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}")
        logger.exception("%s run %s failed", what, run.pk)
        if not isinstance(exc, Exception):
            raise
        return None


class RunReporter:
    """The trainers' progress callback `progress(fraction, metrics)`.

    Keeps every metric point, and writes progress, the points and log lines to the run at most every
    `every_s` seconds (and always at the end). Raises RunAborted when the run was cancelled or reaped,
    which unwinds the trainer through atomic_output_dir, so no artifact is left behind.
    """

    def __init__(self, *, run_id: int, span: tuple[float, float] = (0.0, 1.0), every_s: float | None = None,
                 echo: Callable[[float, dict[str, Any]], None] | None = None):
        self.run_id, self.span, self.echo = run_id, span, echo
        self.every_s = REPORT_EVERY_S if every_s is None else every_s
        self._points: list[dict[str, Any]] = []
        self._lines: list[str] = []
        self._last = 0.0
        self.fraction = 0.0

    def __call__(self, fraction: float, metrics: dict[str, Any]) -> None:
        lo, hi = self.span
        self.fraction = lo + (hi - lo) * min(1.0, max(0.0, float(fraction)))
        point = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float, str, bool)) or v is None}
        if point:
            self._points.append(point)
            if "step" in point:
                shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items())
                self._lines.append(shown)
        if self.echo:
            self.echo(self.fraction, point)
        if fraction >= 1.0 or time.monotonic() - self._last >= self.every_s:
            self.flush()

    def log(self, line: str) -> None:
        self._lines.append(line)

    def flush(self) -> None:
        points, lines = self._points, self._lines
        self._points, self._lines = [], []
        self._last = time.monotonic()
        if not run_heartbeat(run_id=self.run_id, progress=self.fraction, metrics=points, log_lines=lines):
            raise RunAborted(f"run {self.run_id} is no longer running")


class _HeartbeatThread(threading.Thread):
    """Beats while the trainer is busy in a long step, model load or evaluation. It dies with the
    process, so a SIGKILLed worker goes silent and the reaper finds it."""

    def __init__(self, run_id: int, interval: float):
        super().__init__(name=f"heartbeat-run-{run_id}", daemon=True)
        self.run_id, self.interval, self.stopped = run_id, interval, threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.interval):
                try:
                    run_heartbeat(run_id=self.run_id)
                except Exception:  # a DB blip must not kill the beat; the reaper is the backstop
                    logger.exception("heartbeat failed for run %s", self.run_id)
        finally:
            connection.close()


class run_heartbeats:
    """Context manager: a heartbeat thread for the block's duration."""

    def __init__(self, *, run_id: int):
        stale = settings.PAIRWISE_HEARTBEAT_STALE.total_seconds()
        self.thread = _HeartbeatThread(run_id, interval=min(30.0, max(0.5, stale / 4)))

    def __enter__(self):
        self.thread.start()
        return self.thread

    def __exit__(self, *exc):
        self.thread.stopped.set()
        self.thread.join(timeout=10)
        return False


def threads_set(*, params: dict[str, Any]) -> None:
    """params["threads"] caps torch's CPU threads for this run (a worker shared with other work)."""
    if params.get("threads"):
        import torch

        torch.set_num_threads(int(params["threads"]))
