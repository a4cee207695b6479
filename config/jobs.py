"""What happens to a background job's row when its worker is gone: one reaper for training runs,
export jobs and import jobs (each app's service describes its kind in a JobReaper and calls
jobs_reap_stale; labeling never imports training, so the shared loop lives here).

Celery acknowledges a task whose worker process was SIGKILLed (OOM killer, node loss) and a broker
that keeps nothing on disk (Redis by default) loses queued messages when it restarts. Either way
nothing else would ever move the row, so beat runs the reapers every minute: a RUNNING row whose
heartbeat went stale is failed and its half-written output removed; a QUEUED row no worker picked
up gets its task sent again (a duplicate is harmless: each start takes a QUEUED row once, under a
row lock), and is failed with the reason once it has waited PAIRWISE_QUEUED_MAX_AGE.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

logger = logging.getLogger(__name__)


def job_claim(model, *, job_id: int, stale: Callable[[], QuerySet], reset: dict[str, Any]):
    """QUEUED -> RUNNING under a row lock, or a RUNNING job whose worker went silent (a redelivery
    after the worker died) restarted, with `reset` fields set back. None when there is nothing to do:
    the job is finished, failed (reaped: a late redelivery does not revive it), or running with a live
    heartbeat (a duplicate delivery while its worker works)."""
    with transaction.atomic():
        job = model.objects.select_for_update(of=("self",)).select_related("project", "created_by").filter(pk=job_id).first()
        if job is None or job.status in (model.Status.SUCCEEDED, model.Status.FAILED):
            return None
        if job.status == model.Status.RUNNING and not stale().filter(pk=job.pk).exists():
            return None
        now = timezone.now()
        job.status, job.started_at, job.heartbeat_at = model.Status.RUNNING, now, now
        for name, value in reset.items():
            setattr(job, name, value)
        job.save(update_fields=["status", "started_at", "heartbeat_at", *reset])
    return job


@dataclass(frozen=True)
class JobReaper:
    what: str  # "run", "export", "import": in errors and logs
    failed_status: str
    stale: Callable[[], QuerySet]  # RUNNING rows whose heartbeat is older than the limit
    unpicked: Callable[[datetime], QuerySet]  # QUEUED rows whose last task message is old
    send: Callable[[Any], None]  # send the row's task again (the row is locked)
    cleanup: Callable[[Any], None]  # remove what a failed row left on disk (after the commit)
    queue_hint: Callable[[Any], str] = lambda job: "a worker consuming the celery queue"
    reaped_note: str = ""  # added to a reaped row's error


def jobs_reap_stale(reaper: JobReaper) -> list[int]:
    """Fail the stale RUNNING rows (cleaning up after them) and resend or fail the lost QUEUED ones;
    the ids of the rows it failed."""
    failed = jobs_resend_lost(reaper)
    for job_id in list(reaper.stale().values_list("pk", flat=True)):
        with transaction.atomic():
            job = reaper.stale().select_for_update(of=("self",)).filter(pk=job_id).first()
            if job is None:
                continue
            last = job.heartbeat_at or job.started_at
            worker = f" {job.worker}" if getattr(job, "worker", "") else ""
            job.status, job.finished_at = reaper.failed_status, timezone.now()
            job.error = (f"Reaped: no heartbeat since {last.isoformat() if last else 'start'} "
                         f"(limit {settings.PAIRWISE_HEARTBEAT_STALE}); the worker{worker} was killed or lost."
                         f"{reaper.reaped_note}")
            job.save(update_fields=["status", "finished_at", "error"])
        reaper.cleanup(job)
        failed.append(job_id)
        logger.warning("reaped stale %s %s", reaper.what, job_id)
    return failed


def jobs_resend_lost(reaper: JobReaper, *, now: datetime | None = None) -> list[int]:
    """Send again the task of each QUEUED row no worker took; fail it once it has waited
    PAIRWISE_QUEUED_MAX_AGE. The ids of the rows it failed."""
    now = now or timezone.now()
    failed = []
    for job_id in list(reaper.unpicked(now).values_list("pk", flat=True)):
        with transaction.atomic():
            job = reaper.unpicked(now).select_for_update(of=("self",)).filter(pk=job_id).first()
            if job is None:
                continue
            if now - job.created_at < settings.PAIRWISE_QUEUED_MAX_AGE:
                reaper.send(job)
                logger.warning("%s %s was not picked up since %s; sent its task again (send %s)",
                               reaper.what, job.pk, job.sent_at, job.sends)
                continue
            job.status, job.finished_at = reaper.failed_status, now
            job.error = (f"No worker started this {reaper.what} in {now - job.created_at} ({job.sends} task messages "
                         f"sent, limit {settings.PAIRWISE_QUEUED_MAX_AGE}): is {reaper.queue_hint(job)}?")
            job.save(update_fields=["status", "finished_at", "error"])
        reaper.cleanup(job)
        failed.append(job_id)
    return failed
