"""training.services.execution through Postgres restarts: a run keeps going through 5 s outages of a
private cluster (bench/pg_cluster.py), one while it reports progress and one during a quiet step
(a long save): its heartbeat thread reconnects (so the quiet step is not taken for a dead worker),
no progress point is lost, and it succeeds.

The run is executed in a subprocess on the private cluster (the real run_execute frame, RunReporter
and heartbeat thread, with persistent connections as in production); its body is a fake trainer
that reports steps until told to go quiet, then sleeps until told to finish. The test restarts the
cluster while the body reports and reads the run's row directly.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from bench.pg_cluster import ThrowawayCluster

ROOT = Path(__file__).resolve().parents[3]

STALE_S = 20  # heartbeats every 5 s, retries for up to 10 s: longer than the outage, shorter than the stale limit
OUTAGE_S = 5


def job_main(url: str, control: str) -> None:
    """The subprocess: migrate the private database, queue a run and execute it with a fake trainer."""
    from bench.annotate_load import django_setup

    django_setup(url)
    from labeling.services.projects import project_create
    from training.services.execution import RunReporter, run_execute
    from training.services.runs import run_create, run_succeed

    folder = Path(control)
    run = run_create(project=project_create(name="Outage", slug="outage"), kind="reward", params={})

    def body(run):
        reporter = RunReporter(run_id=run.pk, every_s=0.5)
        (folder / "running").write_text(str(run.pk))
        step = 0
        while not (folder / "quiet").exists():  # reporting through the outage
            step += 1
            reporter(0.5, {"step": step, "loss": 1.0 / step})
            time.sleep(0.05)
        reporter.flush()
        (folder / "quiet-ack").write_text(str(step))
        while not (folder / "finish").exists():  # a long step (a save): only the heartbeat thread speaks
            time.sleep(0.1)
        return run_succeed(run_id=run.pk)  # on a connection the second restart killed

    run_execute(run_id=run.pk, worker="outage-test", what="outage", body=body)


def _wait_file(path: Path, job: subprocess.Popen, log: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text()
        if job.poll() is not None:
            raise AssertionError(f"the job exited with {job.returncode}:\n{log.read_text()[-4000:]}")
        time.sleep(0.1)
    raise AssertionError(f"no {path.name} after {timeout}s:\n{log.read_text()[-4000:]}")


def _run_row(url: str, run_id: int) -> dict:
    import psycopg2
    import psycopg2.extras

    with psycopg2.connect(url.replace("postgres://", "postgresql://")) as conn, \
            conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor:
        cursor.execute("SELECT status, error, heartbeat_at, metrics_history, log_tail, clock_timestamp() AS now "
                       "FROM training_trainingrun WHERE id = %s", [run_id])
        row = cursor.fetchone()
    conn.close()
    return row


def _restart(cluster: ThrowawayCluster, run_id: int):
    """Stop the cluster (every backend is terminated: the job's connections are dead), wait, start it;
    returns the database's clock once it is back."""
    cluster.stop("fast")
    time.sleep(OUTAGE_S)
    cluster.start()
    return _run_row(cluster.url, run_id)["now"]


@pytest.mark.postgres_only
@pytest.mark.slow
def test_a_run_keeps_going_through_postgres_restarts(tmp_path):
    cluster = ThrowawayCluster()
    job = None
    try:
        cluster.init()
        cluster.start()
        log = tmp_path / "job.log"
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "CONN_MAX_AGE": "600",
               "PAIRWISE_HEARTBEAT_STALE_S": str(STALE_S), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        env.pop("TEST_DATABASE_NAME", None)
        with log.open("w") as out:
            job = subprocess.Popen(
                [sys.executable, "-c", "import sys; from tests.training.services.test_execution_outage import job_main; "
                                       "job_main(sys.argv[1], sys.argv[2])", cluster.url, str(tmp_path)],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        run_id = int(_wait_file(tmp_path / "running", job, log, timeout=240))
        time.sleep(1.5)

        _restart(cluster, run_id)  # while the body reports
        time.sleep(2)  # the reporter reconnects and reports again

        (tmp_path / "quiet").write_text("")
        last_step = int(_wait_file(tmp_path / "quiet-ack", job, log, timeout=30))
        up = _restart(cluster, run_id)  # during the quiet step
        # Only the heartbeat thread writes now: its beats after the restart show it reconnected.
        deadline = time.monotonic() + 2.5 * STALE_S / 4
        while time.monotonic() < deadline and _run_row(cluster.url, run_id)["heartbeat_at"] <= up:
            time.sleep(0.25)
        row = _run_row(cluster.url, run_id)
        assert row["status"] == "running", row["error"]
        assert row["heartbeat_at"] > up, f"no heartbeat since the restart:\n{log.read_text()[-4000:]}"

        (tmp_path / "finish").write_text("")
        assert job.wait(timeout=60) == 0, log.read_text()[-4000:]
        done = _run_row(cluster.url, run_id)
        assert done["status"] == "succeeded", done["error"]
        steps = [point["step"] for point in done["metrics_history"]]
        assert set(steps) == set(range(1, last_step + 1)), "every step's point is recorded, the outage's too"
        assert done["heartbeat_at"] > up
        assert "database unavailable" in log.read_text()  # the outage was met, and ridden out
    finally:
        if job is not None and job.poll() is None:
            job.kill()
            job.wait(timeout=10)
        cluster.remove()


def test_a_report_that_finds_no_database_keeps_its_points_and_training_goes_on(monkeypatch, settings):
    """The reporter retries for half the stale limit, then gives up without failing the run; while the
    database stays away later reports try once each (training is not slowed), and the first report
    that lands carries every point kept meanwhile."""
    from django.db import OperationalError

    from training.services import execution

    settings.PAIRWISE_HEARTBEAT_STALE = timedelta(seconds=2)  # retries for 1 s
    down, calls = [True], []

    def heartbeat(**kwargs):
        calls.append(kwargs)
        if down[0]:
            raise OperationalError("server closed the connection unexpectedly")
        return True

    monkeypatch.setattr(execution, "run_heartbeat", heartbeat)
    reporter = execution.RunReporter(run_id=1, every_s=0)
    begin = time.monotonic()
    reporter(0.1, {"step": 1})
    first = time.monotonic() - begin
    reporter(0.2, {"step": 2})
    second = time.monotonic() - begin - first
    assert first >= 0.7 and len(calls) >= 3, "it retried, with backoff, for about a second"
    assert second < 0.2 and calls[-1]["metrics"] == [{"step": 1}, {"step": 2}], "then one try, with every point kept"
    down[0] = False
    reporter(0.3, {"step": 3})
    assert [point["step"] for point in calls[-1]["metrics"]] == [1, 2, 3] and calls[-1]["progress"] == 0.3
    reporter(0.4, {"step": 4})
    assert calls[-1]["metrics"] == [{"step": 4}]
