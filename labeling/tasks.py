"""Celery tasks: thin wrappers that take ids and call the service of the same name."""
from celery import shared_task

from labeling.services import exports
from labeling.services.assignment import assignments_expire_sweep as sweep


@shared_task(name="labeling.tasks.export_run", acks_late=True, soft_time_limit=3 * 3600, time_limit=3 * 3600 + 300)
def export_run(job_id: int) -> None:
    # Idempotent: the service skips a finished job and rewrites the file of a re-delivered one.
    exports.export_run(job_id=job_id)


@shared_task(name="labeling.tasks.assignments_expire_sweep", acks_late=True, soft_time_limit=300, time_limit=360)
def assignments_expire_sweep() -> int:
    # The hot path reclaims a few expired leases lazily; this sweep returns the rest to the pool.
    return sweep()
