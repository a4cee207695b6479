"""How a run task executes: the frame around every task body (run_execute), the progress reporter
the trainers call, and the heartbeat thread that keeps a long step visibly alive. A SIGKILLed
worker goes silent, and the reaper (training.services.runs.runs_reap_stale) finds it. A database
restart is not a dead worker: heartbeats and reports reconnect and retry (config.db.db_retry)."""
from __future__ import annotations

import logging
import time
import traceback
from typing import Any, Callable

from django.conf import settings

from config.db import DB_ERRORS, db_retry, heartbeats
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
        error = f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}"
        db_retry(lambda: run_fail(run_id=run.pk, error=error), what=f"failing run {run.pk}")
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
        self._offline = False
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
        try:  # once a report has given up, the next ones try once each: training is not slowed down for long
            running = db_retry(lambda: run_heartbeat(run_id=self.run_id, progress=self.fraction, metrics=points,
                                                     log_lines=lines),
                               what=f"progress of run {self.run_id}", within_s=0.0 if self._offline else None)
        except DB_ERRORS:
            # Still no database after the retries: keep the points for the next report and train on;
            # the heartbeat thread keeps trying too, and the run ends normally once it is back.
            self._points, self._lines, self._offline = points + self._points, lines + self._lines, True
            logger.warning("run %s: progress not recorded, the database is unavailable", self.run_id)
            return
        self._offline = False
        if not running:
            raise RunAborted(f"run {self.run_id} is no longer running")


def run_heartbeats(*, run_id: int) -> heartbeats:
    """Context manager: a heartbeat thread for the block's duration (it reconnects after a database restart)."""
    return heartbeats(name=f"heartbeat-run-{run_id}", beat=lambda: run_heartbeat(run_id=run_id))


def threads_set() -> None:
    """settings.PAIRWISE_TRAIN_THREADS caps torch's CPU threads for a run (a worker shared with other
    work). An operator knob: a run's params never set it (training.runspec.OPERATOR_ONLY)."""
    threads = int(getattr(settings, "PAIRWISE_TRAIN_THREADS", 0) or 0)
    if threads:
        import torch

        torch.set_num_threads(threads)
