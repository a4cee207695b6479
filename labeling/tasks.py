"""Celery tasks: thin wrappers that take ids and call the service of the same name."""
from celery import shared_task

from labeling.services import exports, import_jobs, label_models
from labeling.services.assignment import assignments_expire_sweep as sweep


@shared_task(name="labeling.tasks.export_run", acks_late=True, soft_time_limit=3 * 3600, time_limit=3 * 3600 + 300)
def export_run(job_id: int) -> None:
    # Idempotent: the service skips a finished job and rewrites the file of a re-delivered one.
    exports.export_run(job_id=job_id)


@shared_task(name="labeling.tasks.import_run", acks_late=True, soft_time_limit=3 * 3600, time_limit=3 * 3600 + 300)
def import_run(job_id: int) -> None:
    # Idempotent: the service takes a QUEUED job once, under a row lock; the import is one transaction.
    import_jobs.import_run(job_id=job_id)


@shared_task(name="labeling.tasks.import_jobs_reap_stale", queue="celery", acks_late=True, ignore_result=True,
             soft_time_limit=60, time_limit=90)
def import_jobs_reap_stale() -> list[int]:
    # Every minute (beat): fail import jobs whose worker died, resend those no worker picked up.
    return import_jobs.import_jobs_reap_stale()


@shared_task(name="labeling.tasks.assignments_expire_sweep", acks_late=True, soft_time_limit=300, time_limit=360)
def assignments_expire_sweep() -> int:
    # The hot path reclaims a few expired leases lazily; this sweep returns the rest to the pool.
    return sweep()


@shared_task(name="labeling.tasks.export_jobs_reap_stale", queue="celery", acks_late=True, ignore_result=True,
             soft_time_limit=60, time_limit=90)
def export_jobs_reap_stale() -> list[int]:
    # Every minute (beat): fail export jobs whose worker died, resend those no worker picked up.
    return exports.export_jobs_reap_stale()


@shared_task(name="labeling.tasks.label_model_fit", acks_late=True, ignore_result=True, soft_time_limit=600, time_limit=660)
def label_model_fit(project_id: int) -> None:
    # Idempotent: a re-delivered fit reads the same judgments and replaces the project's one stored fit.
    label_models.label_model_fit(project_id=project_id)
