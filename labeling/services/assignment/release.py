"""Ending a lease without a result: the annotator skips, the lease expires (lazily on the hot
path, or by a sweep), or an admin releases an annotator's leases (an exclusion)."""
from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import connection, transaction
from django.utils import timezone

from labeling.models import Assignment, Project
from labeling.services.assignment.locking import (
    assignment_active_check, assignment_finish, assignment_lock, task_seat_free,
)


def assignment_skip(*, assignment: Assignment, annotator: AbstractUser) -> Assignment:
    """The annotator passes; the seat goes back to the pool and this annotator never sees the task again."""
    with transaction.atomic():
        locked = assignment_lock(assignment_id=assignment.pk, annotator=annotator)
        if locked.state == Assignment.State.SKIPPED:
            return locked
        assignment_active_check(assignment=locked)
        assignment_finish(assignment=locked, state=Assignment.State.SKIPPED)
        task_seat_free(task_id=locked.task_id, holds_seat=locked.holds_seat)
    return locked


def assignments_release(*, project: Project, annotator: AbstractUser) -> int:
    """End the annotator's leases in the project now, as if they had lapsed: each is marked expired and
    its seat goes back to the pool. Returns how many were released.

    A submit holding one of them finishes first (the row lock), and its judgment stands."""
    with transaction.atomic():
        held = list(Assignment.objects.select_for_update().filter(
            project=project, annotator=annotator, state=Assignment.State.ACTIVE).order_by("id"))
        for assignment in held:
            assignment_finish(assignment=assignment, state=Assignment.State.EXPIRED)
            task_seat_free(task_id=assignment.task_id, holds_seat=assignment.holds_seat)
    return len(held)


def assignments_expire_sweep(*, limit: int | None = None) -> int:
    """Mark leases past their expiry as expired and free their seats. Safe to run from anywhere.

    The hot path calls it with a small limit (lazy reclaim); a periodic job can call it unbounded.
    Locked assignments are skipped: whoever holds them is finishing them right now.
    """
    sql = """
    WITH expired AS (
      UPDATE labeling_assignment SET state = 'expired', finished_at = %(now)s
      WHERE id IN (
        SELECT id FROM labeling_assignment WHERE state = 'active' AND expires_at < %(now)s
        ORDER BY expires_at {limit} FOR UPDATE SKIP LOCKED
      )
      RETURNING task_id, holds_seat
    ), freed AS (
      UPDATE labeling_comparisontask t SET active_assignments = GREATEST(t.active_assignments - e.n, 0)
      FROM (SELECT task_id, count(*) AS n FROM expired WHERE holds_seat GROUP BY task_id) e WHERE t.id = e.task_id
    )
    SELECT count(*) FROM expired
    """.format(limit=f"LIMIT {int(limit)}" if limit else "")
    if connection.vendor != "postgresql":
        return _expire_sweep_portable(limit=limit)
    with connection.cursor() as cursor:
        # Python's clock, not now(): now() is frozen at the start of an enclosing transaction.
        cursor.execute(sql, {"now": timezone.now()})
        return int(cursor.fetchone()[0])


def _expire_sweep_portable(*, limit: int | None) -> int:
    ids = Assignment.objects.filter(state=Assignment.State.ACTIVE, expires_at__lt=timezone.now())
    columns = ("id", "task_id", "holds_seat")
    ids = list(ids.order_by("expires_at").values_list(*columns)[:limit] if limit else ids.values_list(*columns))
    with transaction.atomic():
        for assignment_id, task_id, holds_seat in ids:
            if Assignment.objects.filter(pk=assignment_id, state=Assignment.State.ACTIVE).update(
                state=Assignment.State.EXPIRED, finished_at=timezone.now()
            ):
                task_seat_free(task_id=task_id, holds_seat=holds_seat)
    return len(ids)
