"""Ending a lease without a result: the annotator skips, or the lease expires (lazily on the hot
path, or by a sweep). Also the row lock and state checks that submission shares."""
from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from labeling.models import Assignment, ComparisonTask, Project


class AssignmentConflict(Exception):
    """The assignment cannot take this action (expired, skipped, foreign); the API answers 409."""

    def __init__(self, message: str, *, code: str):
        super().__init__(message)
        self.message, self.code = message, code



def assignment_skip(*, assignment: Assignment, annotator: AbstractUser) -> Assignment:
    """The annotator passes; the seat goes back to the pool and this annotator never sees the task again."""
    with transaction.atomic():
        locked = _locked_for(assignment_id=assignment.pk, annotator=annotator)
        if locked.state == Assignment.State.SKIPPED:
            return locked
        _require_active(locked)
        _finish(locked, state=Assignment.State.SKIPPED)
        ComparisonTask.objects.filter(pk=locked.task_id).update(active_assignments=_minus_one("active_assignments"))
    return locked


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
      RETURNING task_id
    ), freed AS (
      UPDATE labeling_comparisontask t SET active_assignments = GREATEST(t.active_assignments - e.n, 0)
      FROM (SELECT task_id, count(*) AS n FROM expired GROUP BY task_id) e WHERE t.id = e.task_id
      RETURNING e.n
    )
    SELECT coalesce(sum(n), 0) FROM freed
    """.format(limit=f"LIMIT {int(limit)}" if limit else "")
    if connection.vendor != "postgresql":
        return _expire_sweep_portable(limit=limit)
    with connection.cursor() as cursor:
        # Python's clock, not now(): now() is frozen at the start of an enclosing transaction.
        cursor.execute(sql, {"now": timezone.now()})
        return int(cursor.fetchone()[0])


def _expire_sweep_portable(*, limit: int | None) -> int:
    ids = Assignment.objects.filter(state=Assignment.State.ACTIVE, expires_at__lt=timezone.now())
    ids = list(ids.order_by("expires_at").values_list("id", "task_id")[:limit] if limit else ids.values_list("id", "task_id"))
    with transaction.atomic():
        for assignment_id, task_id in ids:
            if Assignment.objects.filter(pk=assignment_id, state=Assignment.State.ACTIVE).update(
                state=Assignment.State.EXPIRED, finished_at=timezone.now()
            ):
                ComparisonTask.objects.filter(pk=task_id).update(active_assignments=_minus_one("active_assignments"))
    return len(ids)


def _minus_one(field: str):
    from django.db.models.functions import Greatest

    return Greatest(F(field) - 1, 0)


_LOCK_SQL = """
SELECT a.*, t.prompt_id AS task_prompt_id, EXISTS (
  SELECT 1 FROM labeling_membership m WHERE m.project_id = a.project_id AND m.user_id = %s AND m.role IN ('admin', 'annotator')
) AS still_works_here
FROM labeling_assignment a JOIN labeling_comparisontask t ON t.id = a.task_id WHERE a.id = %s
"""


def _locked_for(*, assignment_id: int, annotator: AbstractUser) -> Assignment:
    # Written out in SQL because it is on every submit. The membership check rides in the locking
    # query: someone removed from the project (or made a viewer) while holding a lease can no
    # longer use it, at no extra round trip.
    sql = _LOCK_SQL + (" FOR UPDATE OF a" if connection.vendor == "postgresql" else "")
    locked = next(iter(Assignment.objects.raw(sql, [annotator.pk, assignment_id])), None)
    if locked is None or locked.annotator_id != annotator.pk:
        raise AssignmentConflict(
            "This assignment belongs to another annotator; ask for your next task.", code="foreign"
        )
    if not (locked.still_works_here or annotator.is_superuser):
        raise AssignmentConflict("You are no longer an annotator in this project.", code="not_member")
    locked.project = next(iter(Project.objects.raw("SELECT * FROM labeling_project WHERE id = %s", [locked.project_id])))
    return locked


def _require_active(assignment: Assignment) -> None:
    if assignment.state == Assignment.State.ACTIVE and assignment.expires_at <= timezone.now():
        # Free the seat now rather than waiting for a sweep; the caller's transaction commits it.
        _finish(assignment, state=Assignment.State.EXPIRED)
        ComparisonTask.objects.filter(pk=assignment.task_id).update(active_assignments=_minus_one("active_assignments"))
        raise _expired_conflict()
    if assignment.state == Assignment.State.EXPIRED:
        raise _expired_conflict()
    if assignment.state != Assignment.State.ACTIVE:
        raise AssignmentConflict(
            f"This assignment was already {assignment.state}; ask for your next task.", code=assignment.state
        )


def _expired_conflict() -> AssignmentConflict:
    return AssignmentConflict(
        "Your lease on this task expired and it went back to the pool; your answer was not saved. "
        "Ask for your next task.", code="expired",
    )


def _finish(assignment: Assignment, *, state: str) -> None:
    assignment.state, assignment.finished_at = state, timezone.now()
    Assignment.objects.filter(pk=assignment.pk).update(state=state, finished_at=assignment.finished_at)
