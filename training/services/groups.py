"""Training on a group of processes: the Celery task that owns the run starts the launcher (torchrun on
the CPU, `accelerate launch` on GPUs or with an accelerate config file; training.ml.launch) and
supervises the group until it ends.

- Rank 0 appends progress lines to a file; the supervisor forwards them to the run's RunReporter,
  which heartbeats into the database, and heartbeats between lines too, so a long step is not taken
  for a dead worker.
- Cancelling the run (RunAborted from the reporter), the task's time limit, or any other error ends
  every process of the group (SIGTERM to the launcher's session; the launcher stops its ranks).
- A worker process that dies (SIGKILL, the OOM killer) takes the group with it: the launcher and
  each rank get the parent-death signal (training.ml.parent_death), so no rank keeps the GPUs.
- A rank that dies makes the launcher exit non-zero: the run fails with the end of the group's log,
  and the reaper cleans up as for any failed run. Rank 0 alone writes the artifact, atomically.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from django.conf import settings

from training.ml.launch import launch_command
from training.ml.parent_death import guarded
from training.services.execution import REPORT_EVERY_S, RunReporter

POLL_S = 0.5
KILL_GRACE_S = 10
LOG_TAIL_CHARS = 3000
MAX_PROCESSES = 64


def group_size(*, params: dict[str, Any]) -> int:
    """Processes for a run: its params["processes"], else settings.PAIRWISE_TRAIN_PROCESSES (1)."""
    return max(1, min(MAX_PROCESSES, int(params.get("processes") or getattr(settings, "PAIRWISE_TRAIN_PROCESSES", 1))))


def _forward(path: Path, offset: int, reporter: RunReporter) -> int:
    """Report the progress lines written since `offset`; returns the new offset (whole lines only)."""
    if not path.exists():
        return offset
    with path.open("rb") as handle:
        handle.seek(offset)
        chunk = handle.read()
    complete = chunk[: chunk.rfind(b"\n") + 1]
    for line in complete.decode().splitlines():
        point = json.loads(line)
        reporter(point["fraction"], point["metrics"])
    return offset + len(complete)


def _stop(process: subprocess.Popen) -> None:
    """End every rank: SIGTERM to the group, SIGKILL after a grace period."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def group_start(*, command: list[str], env: dict[str, str], log: IO[bytes]) -> subprocess.Popen:
    """Start the launcher in a session of its own (_stop signals its group), tied to this process by
    the parent-death signal (training.ml.parent_death): when the worker process dies, even by
    SIGKILL, the launcher dies and each rank with it."""
    return subprocess.Popen(guarded(command, parent_pid=os.getpid()), cwd=settings.BASE_DIR, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def group_train(*, trainer: str, job: dict[str, Any], rows: list[dict[str, Any]], processes: int, scratch: Path,
                reporter: RunReporter) -> dict[str, Any]:
    """Run one training job on `processes` processes and return rank 0's metrics."""
    import torch

    scratch.mkdir(parents=True, exist_ok=True)
    paths = {name: scratch / f"{name}" for name in ("data.jsonl", "job.json", "progress.jsonl", "result.json", "group.log")}
    paths["data.jsonl"].write_text("".join(json.dumps(row) + "\n" for row in rows))
    paths["job.json"].write_text(json.dumps({**job, "trainer": trainer, "data": str(paths["data.jsonl"]),
                                             "progress": str(paths["progress.jsonl"]), "result": str(paths["result.json"])}))
    command = launch_command(job_path=paths["job.json"], processes=processes, gpu=torch.cuda.is_available(),
                             accelerate_config=getattr(settings, "PAIRWISE_ACCELERATE_CONFIG", ""))
    threads = max(1, (os.cpu_count() or 1) // processes)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(settings.BASE_DIR)}
    reporter.log(f"training on {processes} processes: {' '.join(command[1:])}")
    with paths["group.log"].open("wb") as log:
        process = group_start(command=command, env=env, log=log)
    try:
        offset, last_flush = 0, time.monotonic()
        while process.poll() is None:
            offset = _forward(paths["progress.jsonl"], offset, reporter)
            if time.monotonic() - last_flush >= REPORT_EVERY_S:
                reporter.flush()  # a heartbeat; raises RunAborted once the run is cancelled
                last_flush = time.monotonic()
            time.sleep(POLL_S)
        _forward(paths["progress.jsonl"], offset, reporter)
        if process.returncode != 0:
            tail = paths["group.log"].read_text(errors="replace")[-LOG_TAIL_CHARS:]
            raise RuntimeError(f"the training process group failed (exit {process.returncode}):\n{tail}")
        return json.loads(paths["result.json"].read_text())
    finally:
        _stop(process)
        shutil.rmtree(scratch, ignore_errors=True)
