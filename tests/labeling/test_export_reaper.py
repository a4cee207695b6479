"""Export jobs are reaped and resent like training runs (labeling.services.exports.export_jobs_reap_stale):
a RUNNING job whose worker went silent is failed and its `.part` file removed, a live one (its
heartbeat thread beats while it writes) is left alone, a QUEUED job no worker picked up is sent
again, and one that waited too long is failed with the reason."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from labeling.models import ExportJob
from labeling.services import exports
from tests.labeling.judging import import_rows


@pytest.fixture
def project(project_factory, settings, tmp_path):
    settings.PAIRWISE_EXPORTS_DIR = tmp_path
    settings.PAIRWISE_HEARTBEAT_STALE = timedelta(seconds=30)
    project = project_factory(mode="pairwise")
    import_rows(project, *({"id": f"r{i}", "prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"x{i}"} for i in range(10)))
    return project


@pytest.fixture
def eager():
    import labeling.tasks  # noqa: F401  (registers export_run: tasks are sent by name, and an unknown name goes to the broker)
    from config.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def _part_file(job: ExportJob):
    path = exports.partial_path(exports.export_path(project=job.project, stem=f"job-{job.pk}", fmt=job.format))
    path.write_bytes(b'{"prompt": "half a li')
    return path


def _running(project, beat_ago: timedelta) -> ExportJob:
    return ExportJob.objects.create(project=project, format="trl", status=ExportJob.Status.RUNNING,
                                    started_at=timezone.now() - timedelta(hours=1), heartbeat_at=timezone.now() - beat_ago)


@pytest.mark.django_db
def test_a_silent_running_job_is_failed_and_its_part_file_removed(project):
    dead, live = _running(project, timedelta(minutes=5)), _running(project, timedelta(seconds=5))
    dead_part, live_part = _part_file(dead), _part_file(live)

    assert exports.export_jobs_reap_stale() == [dead.pk]
    dead.refresh_from_db()
    assert dead.status == ExportJob.Status.FAILED and dead.error.startswith("Reaped: no heartbeat since")
    assert dead.finished_at is not None and not dead_part.exists()
    assert ExportJob.objects.get(pk=live.pk).status == ExportJob.Status.RUNNING and live_part.exists()

    # A late redelivery of the dead job's message does not revive it; a duplicate of the live one is a no-op.
    assert exports.export_run(job_id=dead.pk).status == ExportJob.Status.FAILED
    assert exports.export_run(job_id=live.pk).status == ExportJob.Status.RUNNING
    assert sorted(p.name for p in dead_part.parent.iterdir()) == [live_part.name]


@pytest.mark.django_db
def test_a_queued_job_no_worker_took_is_sent_again_and_runs(project, eager, django_capture_on_commit_callbacks):
    lost = ExportJob.objects.create(project=project, format="csv", sends=1)
    ExportJob.objects.filter(pk=lost.pk).update(sent_at=timezone.now() - timedelta(hours=1),
                                                created_at=timezone.now() - timedelta(hours=1))
    forgotten = ExportJob.objects.create(project=project, format="csv", sends=3)
    ExportJob.objects.filter(pk=forgotten.pk).update(sent_at=timezone.now() - timedelta(hours=1),
                                                     created_at=timezone.now() - timedelta(days=3))
    fresh = exports.export_job_create(project=project, fmt="trl", filters=exports.ExportFilters())

    with django_capture_on_commit_callbacks(execute=True):
        assert exports.export_jobs_reap_stale() == [forgotten.pk]

    lost.refresh_from_db()
    assert lost.status == ExportJob.Status.SUCCEEDED and lost.sends == 2 and lost.rows == 10
    assert lost.started_at and lost.heartbeat_at and lost.path.endswith(f"job-{lost.pk}.csv")
    forgotten.refresh_from_db()
    assert forgotten.status == ExportJob.Status.FAILED and "No worker started this export" in forgotten.error
    fresh.refresh_from_db()
    assert fresh.status == ExportJob.Status.QUEUED and fresh.sends == 1 and fresh.sent_at is not None


@pytest.mark.django_db(transaction=True)
def test_a_long_export_beats_and_is_not_reaped_while_it_writes(project, settings, monkeypatch):
    settings.PAIRWISE_HEARTBEAT_STALE = timedelta(seconds=2)  # beats every 0.5 s
    job = ExportJob.objects.create(project=project, format="trl")
    seen = {}
    real = exports.preferences_export

    def slow(**kwargs):
        first = ExportJob.objects.get(pk=job.pk).heartbeat_at
        time.sleep(3)  # longer than the stale limit
        seen["reaped"] = exports.export_jobs_reap_stale()
        seen["beats"] = (first, ExportJob.objects.get(pk=job.pk).heartbeat_at)
        return real(**kwargs)

    monkeypatch.setattr(exports, "preferences_export", slow)
    done = exports.export_run(job_id=job.pk)
    assert seen["reaped"] == [] and seen["beats"][1] > seen["beats"][0]
    assert done.status == ExportJob.Status.SUCCEEDED and done.rows == 10


@pytest.mark.django_db
def test_a_failed_export_leaves_no_part_file(project, monkeypatch):
    job = ExportJob.objects.create(project=project, format="trl")

    def half_then_fail(*, out, **kwargs):
        out.write(b'{"prompt": "half')
        raise OSError("disk full")

    monkeypatch.setattr(exports, "preferences_export", half_then_fail)
    with pytest.raises(OSError):
        exports.export_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == ExportJob.Status.FAILED and "disk full" in job.error
    assert not list((exports.export_path(project=project, stem="x", fmt="trl")).parent.iterdir())
