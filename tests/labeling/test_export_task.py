"""The background export job: queued on commit, run by the Celery task (eager here), progress,
download link, snapshot, idempotent re-runs and failures recorded on the job."""
import json
from pathlib import Path

import pytest

from labeling.models import ExportJob
from labeling.selectors import exports as export_selectors
from labeling.services import exports
from labeling.tasks import export_run
from tests.labeling.judging import import_rows

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(project_factory, settings, tmp_path):
    settings.PAIRWISE_EXPORTS_DIR = tmp_path
    settings.CELERY_TASK_ALWAYS_EAGER = True
    from config.celery import app
    app.conf.task_always_eager = True
    project = project_factory(mode="pairwise")
    import_rows(project, *({"id": f"r{i}", "prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"x{i}"} for i in range(30)))
    yield project
    app.conf.task_always_eager = False


def test_job_runs_on_commit_with_progress_download_and_snapshot(project, member, api_client,
                                                                 django_capture_on_commit_callbacks):
    client = api_client(member(project, "admin"))
    with django_capture_on_commit_callbacks(execute=True):
        queued = client.post(f"/api/projects/{project.slug}/exports/jobs/", {"format": "trl", "snapshot": True,
                                                                             "split": "train"}, format="json")
    assert queued.status_code == 202 and queued.json()["status"] == "queued" and queued.json()["download_url"] is None
    job = client.get(f"/api/projects/{project.slug}/exports/jobs/{queued.json()['id']}/").json()
    assert job["status"] == "succeeded" and job["progress"] == 1.0 and 0 < job["rows"] < 30
    download = client.get(job["download_url"])
    body = b"".join(download.streaming_content)
    assert download.status_code == 200 and len(body.decode().splitlines()) == job["rows"]
    snapshot = ExportJob.objects.get().snapshot
    assert snapshot.rows == job["rows"] and snapshot.filters["split"] == "train"
    assert json.loads(exports.manifest_path(snapshot=snapshot).read_text())["sha256"] == snapshot.sha256


def test_task_is_idempotent_and_records_failures(project, monkeypatch):
    job = ExportJob.objects.create(project=project, format="csv", filters={})
    export_run(job.pk)
    job.refresh_from_db()
    first = Path(job.path).read_bytes()
    assert job.status == "succeeded" and job.rows == 30 and first.startswith(b"id,prompt")
    monkeypatch.setattr(exports, "export_to_file", lambda **kw: pytest.fail("a finished job must not run again"))
    export_run(job.pk)
    failing = ExportJob.objects.create(project=project, format="trl", filters={})

    def boom(**kw):
        raise OSError("disk full")

    monkeypatch.setattr(exports, "export_to_file", boom)
    with pytest.raises(OSError):
        export_run(failing.pk)
    failing.refresh_from_db()
    assert failing.status == "failed" and "disk full" in failing.error


def test_progress_is_reported_while_rows_go_out(project, monkeypatch):
    seen = []
    real = exports._progress_writer

    def spy():
        write = real()

        def record(job_id, progress, rows):
            seen.append((progress, rows))
            write(job_id, progress, rows)
        record.close = getattr(write, "close", lambda: None)
        return record

    monkeypatch.setattr(exports, "_progress_writer", spy)
    monkeypatch.setattr(export_selectors, "CHUNK", 10)
    job = ExportJob.objects.create(project=project, format="judgments", filters={})
    export_run(job.pk)
    assert [rows for _, rows in seen] == [10, 20, 30] and all(p <= 0.99 for p, _ in seen)


def test_admin_action_queues_a_trl_snapshot_job(project, admin_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post("/admin/labeling/project/", {
            "action": "export_preferences_trl", "_selected_action": [project.pk]}, follow=True)
    job = ExportJob.objects.get(project=project)
    assert response.status_code == 200 and f"export job {job.pk} queued" in response.content.decode()
    assert job.format == "trl" and job.status == "succeeded" and job.snapshot.rows == 30
