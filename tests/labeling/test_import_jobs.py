"""Imports over PAIRWISE_IMPORT_BACKGROUND_BYTES run as a background job (labeling.services.import_jobs) on
a REAL Celery worker: 202 with the job, progress to 1.0, rows written, the saved upload removed; a bad
file's job fails with its errors by line and writes nothing; smaller files (and dry runs) stay
synchronous; another project's job is not found; the reaper fails a job whose worker died."""
from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from labeling.models import ImportBatch, ImportJob, Judgment, Prompt
from labeling.services import import_jobs
from tests.training.conftest import celery_worker, celery_worker_factory, models_dir, wait_for  # noqa: F401

ROWS = 300


def _file(rows: int = ROWS, bad_line: int | None = None, name: str = "big.jsonl") -> io.BytesIO:
    lines = [json.dumps({"id": f"r{i}", "prompt": f"prompt {i}", "chosen": f"good {i}", "rejected": f"bad {i}"})
             for i in range(rows)]
    if bad_line is not None:
        lines[bad_line - 1] = json.dumps({"id": "broken", "chosen": "no prompt here"})
    upload = io.BytesIO(("\n".join(lines) + "\n").encode())
    upload.name = name
    return upload


@pytest.fixture
def background(settings, tmp_path):
    """Anything over 1 KB goes to the worker; saved uploads land in this test's folder."""
    settings.PAIRWISE_IMPORT_BACKGROUND_BYTES = 1024
    settings.PAIRWISE_IMPORTS_DIR = tmp_path / "imports"
    return settings.PAIRWISE_IMPORTS_DIR


def _post(client, project, upload, **fields):
    return client.post(f"/api/projects/{project.slug}/imports/", {"file": upload, **fields}, format="multipart")


def _finished(client, url):
    body = client.get(url).json()
    return body if body["status"] in ("succeeded", "failed") else None


@pytest.mark.postgres_only
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_large_upload_is_imported_by_the_worker_and_a_bad_one_fails_by_line(
        celery_worker, background, project_factory, member, api_client):
    project = project_factory(mode="pairwise")
    admin = member(project, "admin")
    client = api_client(admin)

    queued = _post(client, project, _file())
    assert queued.status_code == 202, queued.content
    job = queued.json()
    assert job["status"] == "queued" and job["url"] == f"/api/projects/{project.slug}/imports/jobs/{job['id']}/"
    saved = Path(ImportJob.objects.get(pk=job["id"]).path)
    assert saved.parent == background
    done = wait_for(lambda: _finished(client, job["url"]), timeout=90, worker=celery_worker, what="the import job")
    assert done["status"] == "succeeded", done
    assert done["progress"] == 1.0 and done["rows_done"] == ROWS
    assert done["result"]["judgments"] == ROWS and done["result"]["pairs"] == ROWS and done["result"]["batch_id"]
    assert Judgment.objects.filter(project=project).count() == ROWS
    assert ImportBatch.objects.filter(project=project, filename="big.jsonl").count() == 1
    assert not saved.exists()  # the upload's copy is gone once imported

    page = api_client(admin, token=False).get(reverse("console-data", args=[project.slug]))
    assert f"Imported <bdi>big.jsonl</bdi>: {ROWS} rows" in page.content.decode()

    other = project_factory(mode="pairwise")
    other_client = api_client(member(other, "admin"))
    failing = _post(other_client, other, _file(bad_line=7, name="broken.jsonl"))
    assert failing.status_code == 202, failing.content
    failed = wait_for(lambda: _finished(other_client, failing.json()["url"]), timeout=90, worker=celery_worker,
                      what="the failing import job")
    assert failed["status"] == "failed" and "nothing was written" in failed["error"]
    assert [e["line"] for e in failed["errors"]] == [7] and failed["errors"][0]["field"]
    assert not Prompt.objects.filter(project=other).exists() and not Judgment.objects.filter(project=other).exists()
    assert not ImportBatch.objects.filter(project=other).exists()
    assert not Path(ImportJob.objects.get(pk=failing.json()["id"]).path).exists()


@pytest.mark.django_db
def test_small_uploads_and_dry_runs_stay_synchronous(background, project_factory, member, api_client):
    project = project_factory(mode="pairwise")
    client = api_client(member(project, "admin"))
    preview = _post(client, project, _file(), dry_run="true")  # over the threshold, but it writes nothing
    assert preview.status_code == 200 and preview.json()["judgments"] == ROWS
    small = _post(client, project, _file(rows=3, name="small.jsonl"))
    assert small.status_code == 201 and small.json()["judgments"] == 3
    assert not ImportJob.objects.exists() and not background.exists()


@pytest.mark.django_db
def test_a_bad_choice_is_refused_before_anything_is_saved(background, project_factory, member, api_client):
    project = project_factory(mode="demonstrate")
    refused = _post(api_client(member(project, "admin")), project, _file(), preferences="open")
    assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "preferences"
    assert not ImportJob.objects.exists() and not any(background.glob("*"))


@pytest.mark.django_db
def test_another_projects_job_is_not_found(project_factory, member, api_client):
    mine, theirs = project_factory(), project_factory()
    job = ImportJob.objects.create(project=theirs, filename="secret.jsonl", status=ImportJob.Status.RUNNING)
    admin = api_client(member(mine, "admin"))
    assert admin.get(f"/api/projects/{mine.slug}/imports/jobs/{job.pk}/").status_code == 404
    assert admin.get(f"/api/projects/{theirs.slug}/imports/jobs/{job.pk}/").status_code == 404
    annotator = api_client(member(theirs, "annotator"))
    assert annotator.get(f"/api/projects/{theirs.slug}/imports/jobs/{job.pk}/").status_code in (403, 404)
    owner = api_client(member(theirs, "admin")).get(f"/api/projects/{theirs.slug}/imports/jobs/{job.pk}/")
    assert owner.status_code == 200 and owner.json()["filename"] == "secret.jsonl"


@pytest.mark.django_db
def test_the_reaper_fails_a_stale_running_job_and_removes_its_file(settings, tmp_path, project_factory, monkeypatch):
    settings.PAIRWISE_HEARTBEAT_STALE = timedelta(seconds=30)
    project = project_factory()
    long_ago = timezone.now() - timedelta(minutes=20)  # past the heartbeat limit and PAIRWISE_QUEUED_RESEND_AFTER

    def saved(name):
        path = tmp_path / name
        path.write_bytes(b'{"prompt": "x"}\n')
        return path

    dead = ImportJob.objects.create(project=project, filename="a.jsonl", path=str(saved("dead")),
                                    status=ImportJob.Status.RUNNING, started_at=long_ago, heartbeat_at=long_ago)
    live = ImportJob.objects.create(project=project, filename="b.jsonl", path=str(saved("live")),
                                    status=ImportJob.Status.RUNNING, started_at=long_ago, heartbeat_at=timezone.now())
    lost = ImportJob.objects.create(project=project, filename="c.jsonl", path=str(saved("lost")), sent_at=long_ago, sends=1)
    sent = []
    monkeypatch.setattr(import_jobs, "task_send_on_commit", lambda name, *args: sent.append((name, *args)))

    assert import_jobs.import_jobs_reap_stale() == [dead.pk]
    dead.refresh_from_db(), live.refresh_from_db(), lost.refresh_from_db()
    assert dead.status == "failed" and dead.error.startswith("Reaped") and not Path(dead.path).exists()
    assert live.status == "running" and Path(live.path).exists()
    assert lost.status == "queued" and lost.sends == 2 and sent == [(import_jobs.IMPORT_TASK, lost.pk)]
    # A late delivery of the reaped job's task does not revive it.
    assert import_jobs.import_run(job_id=dead.pk).status == "failed"


@pytest.mark.django_db
def test_the_data_tab_shows_a_running_import(project_factory, member, api_client):
    project = project_factory()
    ImportJob.objects.create(project=project, filename="big.jsonl", status=ImportJob.Status.RUNNING,
                             progress=0.4, rows_done=1234)
    page = api_client(member(project, "admin"), token=False).get(reverse("console-data", args=[project.slug]))
    body = page.content.decode()
    assert page.status_code == 200 and "Importing <bdi>big.jsonl</bdi>: 40% (1234 rows)" in body
    assert f'data-import-job="/api/projects/{project.slug}/imports/jobs/' in body and 'data-status="running"' in body
