"""The row lock and state checks every action on a held assignment starts with (submit, correct,
skip), and freeing a task's seat. Lock order is always assignment before task."""
from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import connection
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from labeling.models import Assignment, ComparisonTask, Project


class AssignmentConflict(Exception):
    """The assignment cannot take this action (expired, skipped, foreign); the API answers 409."""

    def __init__(self, message: str, *, code: str):
        super().__init__(message)
        self.message, self.code = message, code


def active_assignments_minus_one():
    """The task's seat count less one, never below zero (a sweep may have freed the seat already)."""
    return Greatest(F("active_assignments") - 1, 0)


def task_seat_free(*, task_id: int, holds_seat: bool = True) -> None:
    """Give back the seat an ending lease held; a seatless lease (Assignment.holds_seat) held none."""
    if holds_seat:
        ComparisonTask.objects.filter(pk=task_id).update(active_assignments=active_assignments_minus_one())


_LOCK_SQL = """
SELECT a.*, t.prompt_id AS task_prompt_id, (
  SELECT CASE WHEN m.role NOT IN ('admin', 'annotator') THEN 'not_member'
              WHEN m.excluded_at IS NOT NULL THEN 'excluded' ELSE '' END
  FROM labeling_membership m WHERE m.project_id = a.project_id AND m.user_id = %s
) AS membership_problem
FROM labeling_assignment a JOIN labeling_comparisontask t ON t.id = a.task_id WHERE a.id = %s
"""


def assignment_lock(*, assignment_id: int, annotator: AbstractUser) -> Assignment:
    """The annotator's assignment, locked for this transaction, with its project and task_prompt_id."""
    # Written out in SQL because it is on every submit. The membership check rides in the locking
    # query: someone removed from the project (or made a viewer) while holding a lease can no
    # longer use it, at no extra round trip; nor can someone excluded, whose lease may have been
    # taken in a race with the exclusion (which releases the leases it sees).
    sql = _LOCK_SQL + (" FOR UPDATE OF a" if connection.vendor == "postgresql" else "")
    locked = next(iter(Assignment.objects.raw(sql, [annotator.pk, assignment_id])), None)
    if locked is None or locked.annotator_id != annotator.pk:
        raise AssignmentConflict(
            "This assignment belongs to another annotator; ask for your next task.", code="foreign"
        )
    if locked.membership_problem == "excluded":
        raise AssignmentConflict("A project admin excluded you from this project's queue.", code="excluded")
    if locked.membership_problem != "" and not annotator.is_superuser:
        raise AssignmentConflict("You are no longer an annotator in this project.", code="not_member")
    locked.project = next(iter(Project.objects.raw("SELECT * FROM labeling_project WHERE id = %s", [locked.project_id])))
    return locked


def assignment_active_check(*, assignment: Assignment) -> None:
    """Raises AssignmentConflict unless the lease is live; a lease found past its expiry is expired here."""
    if assignment.state == Assignment.State.ACTIVE and assignment.expires_at <= timezone.now():
        # Free the seat now rather than waiting for a sweep; the caller's transaction commits it.
        assignment_finish(assignment=assignment, state=Assignment.State.EXPIRED)
        task_seat_free(task_id=assignment.task_id, holds_seat=assignment.holds_seat)
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


def assignment_finish(*, assignment: Assignment, state: str) -> None:
    assignment.state, assignment.finished_at = state, timezone.now()
    Assignment.objects.filter(pk=assignment.pk).update(state=state, finished_at=assignment.finished_at)
