"""Reads of background import jobs (labeling.services.import_jobs): a project's, and the reaper's."""
from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from labeling.models import ImportJob, Project


def import_job_get(*, project: Project, job_id: int) -> ImportJob | None:
    """The job, only within its project (another project's id reads as missing)."""
    return project.import_jobs.filter(pk=job_id).first()


def import_jobs_recent_list(*, project: Project, limit: int = 10) -> list[ImportJob]:
    return list(project.import_jobs.select_related("created_by").order_by("-id")[:limit])


def import_jobs_stale_list(*, now: datetime | None = None) -> QuerySet[ImportJob]:
    """RUNNING jobs whose last heartbeat (or start) is older than PAIRWISE_HEARTBEAT_STALE: the worker died."""
    cutoff = (now or timezone.now()) - settings.PAIRWISE_HEARTBEAT_STALE
    running = ImportJob.objects.filter(status=ImportJob.Status.RUNNING)
    return running.filter(heartbeat_at__lt=cutoff) | running.filter(heartbeat_at__isnull=True, started_at__lt=cutoff)


def import_jobs_queued_unpicked_list(*, now: datetime | None = None) -> QuerySet[ImportJob]:
    """QUEUED jobs whose task was last sent longer than PAIRWISE_QUEUED_RESEND_AFTER ago: no worker took it."""
    cutoff = (now or timezone.now()) - settings.PAIRWISE_QUEUED_RESEND_AFTER
    queued = ImportJob.objects.filter(status=ImportJob.Status.QUEUED)
    return queued.filter(sent_at__lt=cutoff) | queued.filter(sent_at__isnull=True, created_at__lt=cutoff)
