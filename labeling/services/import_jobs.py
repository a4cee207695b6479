"""Imports too large for a web request: an upload of at least PAIRWISE_IMPORT_BACKGROUND_BYTES (as
received) is saved under PAIRWISE_IMPORTS_DIR and imported by the worker (labeling.tasks.import_run)
with the same service as any import (labeling.services.imports.project_data_import: one transaction,
all or nothing), reporting progress and heartbeats on its ImportJob. Liveness is that of export
jobs: a job whose worker died is failed by the reaper and its saved file removed; a lost task
message is sent again. `manage.py import_project_data` stays synchronous.
"""
from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import transaction
from django.utils import timezone

from config.db import db_retry, heartbeat_interval_s, heartbeats
from config.jobs import JobReaper, job_claim, jobs_reap_stale
from config.tasks_send import task_send_on_commit
from labeling.models import ImportJob, Project
from labeling.selectors.import_jobs import import_jobs_queued_unpicked_list, import_jobs_stale_list
from labeling.services.imports import (
    BATCH_REJECTS_KEPT, FORMATS, DataImportError, ImportIssue, ImportResult, import_issues_list,
    import_options_check, import_upload_check, project_data_import,
)

logger = logging.getLogger(__name__)

IMPORT_TASK = "labeling.tasks.import_run"
ERRORS_KEPT = 1000
PROGRESS_EVERY_S = 1.0  # the data tab polls; one small UPDATE a second from the heartbeat thread


def import_result_body(result: ImportResult, *, rejects_kept: int | None = None) -> dict[str, Any]:
    """What an import answers: its counts, its rejects (with their raw text) and its preview."""
    rejects = result.rejects if rejects_kept is None else result.rejects[:rejects_kept]
    return {**result.as_dict(), "preview": result.preview,
            "rejects": [{"line": i.line, "field": i.field, "message": i.message, "raw": i.raw} for i in rejects]}


def import_in_background(*, size: int | None) -> bool:
    """An upload of this size (bytes as received) is imported by a background job."""
    return size is not None and size >= settings.PAIRWISE_IMPORT_BACKGROUND_BYTES


def import_job_create(
    *, project: Project, upload: IO[bytes], filename: str, size: int, user: AbstractUser | None = None,
    source: str = "", fmt: str = "auto", skip_invalid: bool = False, preferences: str = "judgments",
    count_for_retrain: bool = False,
) -> ImportJob:
    """Check what can be checked without reading (name, size, choices: a DataImportError, as for an
    import), save the upload and queue its job; the file is removed when the job ends."""
    import_upload_check(filename=filename, size=size)
    import_options_check(project=project, preferences=preferences)
    if fmt not in FORMATS:
        raise DataImportError([ImportIssue(0, "format", f"must be one of {', '.join(FORMATS)}")])
    folder = Path(settings.PAIRWISE_IMPORTS_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / uuid.uuid4().hex
    try:
        with open(path, "wb") as out:
            shutil.copyfileobj(upload, out, 1024 * 1024)
        with transaction.atomic():
            job = ImportJob.objects.create(
                project=project, filename=filename[:255], path=str(path), size=size, created_by=user,
                options={"source": source, "format": fmt, "skip_invalid": skip_invalid, "preferences": preferences,
                         "count_for_retrain": count_for_retrain})
            _import_job_send(job)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return job


def _saved_remove(job: ImportJob) -> None:
    if job.path:  # Path("") is the working directory
        Path(job.path).unlink(missing_ok=True)


def _import_job_send(job: ImportJob) -> None:
    """Send the job's task after the commit, and record the send (for the reaper, config.jobs)."""
    job.sent_at, job.sends = timezone.now(), job.sends + 1
    ImportJob.objects.filter(pk=job.pk).update(sent_at=job.sent_at, sends=job.sends)
    task_send_on_commit(IMPORT_TASK, job.pk)


def _import_job_start(*, job_id: int) -> ImportJob | None:
    """The job, claimed for this worker (config.jobs.job_claim; a silent RUNNING job's transaction died
    with its worker, so it starts over); None when there is nothing to do."""
    return job_claim(ImportJob, job_id=job_id, stale=import_jobs_stale_list,
                     reset={"progress": 0.0, "rows_done": 0, "error": "", "errors": []})


class _Progress:
    """Where the import is, read by the heartbeat thread, which writes it with the beat on its own
    connection (the import's transaction is open meanwhile, and nothing in it would be visible)."""

    def __init__(self, job: ImportJob, stream: IO[bytes]):
        self.job, self.stream, self.rows = job, stream, 0

    def chunk(self, rows: int) -> None:
        self.rows += rows

    def beat(self) -> bool:
        try:  # how far into the file (compressed bytes for .gz and zip): a fraction of it, never done before the commit
            done = min(0.99, self.stream.tell() / max(1, self.job.size))
        except (OSError, ValueError):  # closed by now
            done = self.job.progress
        return ImportJob.objects.filter(pk=self.job.pk, status=ImportJob.Status.RUNNING).update(
            heartbeat_at=timezone.now(), progress=done, rows_done=self.rows) == 1


def import_run(*, job_id: int) -> ImportJob:
    """Import a queued job's saved file. Idempotent (see _import_job_start). The data and the job's
    success commit together; a failure records the errors by line, and nothing of the file is kept."""
    job = _import_job_start(job_id=job_id)
    if job is None:
        return ImportJob.objects.get(pk=job_id)
    options = job.options
    try:
        with open(job.path, "rb") as stream:
            progress = _Progress(job, stream)
            with heartbeats(name=f"heartbeat-import-{job.pk}", beat=progress.beat,
                            interval=min(PROGRESS_EVERY_S, heartbeat_interval_s())):
                with transaction.atomic():
                    result = project_data_import(
                        project=job.project, stream=stream, filename=job.filename, user=job.created_by,
                        source=options.get("source", ""), fmt=options.get("format", "auto"),
                        skip_invalid=options.get("skip_invalid", False), preferences=options.get("preferences", "judgments"),
                        count_for_retrain=options.get("count_for_retrain", False), on_chunk=progress.chunk,
                    )
                    _import_job_succeed(job=job, result=result, rows=progress.rows)
    except DataImportError as exc:
        _import_job_fail(job=job, error="import failed, nothing was written", errors=import_issues_list(exc.issues[:ERRORS_KEPT]))
    except Exception as exc:
        _import_job_fail(job=job, error=f"{type(exc).__name__}: {exc}"[:2000], errors=[])
        raise
    finally:
        _saved_remove(job)
    job.refresh_from_db()
    return job


def _import_job_succeed(*, job: ImportJob, result: ImportResult, rows: int) -> None:
    """RUNNING -> SUCCEEDED inside the import's transaction; a job no longer RUNNING (reaped) rolls it all back."""
    if not ImportJob.objects.select_for_update().filter(pk=job.pk, status=ImportJob.Status.RUNNING).exists():
        raise DataImportError([ImportIssue(0, "file", "the job was failed while it ran (reaped); nothing was written")])
    ImportJob.objects.filter(pk=job.pk).update(
        status=ImportJob.Status.SUCCEEDED, progress=1.0, rows_done=rows, finished_at=timezone.now(),
        heartbeat_at=timezone.now(), result=import_result_body(result, rejects_kept=BATCH_REJECTS_KEPT))


def _import_job_fail(*, job: ImportJob, error: str, errors: list[dict[str, Any]]) -> None:
    db_retry(lambda: ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.RUNNING).update(
        status=ImportJob.Status.FAILED, error=error, errors=errors, finished_at=timezone.now()),
        what=f"failing import job {job.pk}")


def import_jobs_reap_stale() -> list[int]:
    """Fail RUNNING import jobs whose heartbeat went stale (the worker was killed; its transaction,
    and so its rows, died with it) and remove their saved files; send again the tasks of QUEUED jobs
    no worker picked up, failing them (and removing their files) after PAIRWISE_QUEUED_MAX_AGE
    (config.jobs). Returns the failed ids. Run every minute by beat and by manage.py reap_runs."""
    return jobs_reap_stale(_IMPORT_REAPER)


_IMPORT_REAPER = JobReaper(
    what="import", failed_status=ImportJob.Status.FAILED, stale=import_jobs_stale_list,
    unpicked=lambda now: import_jobs_queued_unpicked_list(now=now), send=lambda job: _import_job_send(job),
    cleanup=lambda job: _saved_remove(job), reaped_note=" Nothing was written.",
)
