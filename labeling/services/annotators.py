"""An admin's say over one annotator of a project: exclude them, re-include them, or re-queue their
tasks. Nothing here deletes a judgment: as with a correction, the rows stay for audit.

- Excluded: no new task (labeling.services.assignment.leasing), their live leases released and a
  lease taken in a race refused at submit (locking), and their judgments left out of the label
  models; training snapshots and exports read the same set (labeling.selectors.annotators).
- Re-queued: each seat their judgments held in a task's overlap goes back to the queue
  (Judgment.counts_for_overlap), so other annotators judge those tasks again.
"""
from __future__ import annotations

import logging

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Case, F, Value, When
from django.db.models.functions import Greatest
from django.utils import timezone

from labeling.models import ComparisonTask, Judgment, Membership, Project
from labeling.services.assignment import assignments_release
from labeling.services.label_models import label_model_fit_request

logger = logging.getLogger(__name__)

EXCLUSION_REASON_MAX_CHARS = 2000
# Tasks locked and updated per statement: an annotator may hold seats in 100k tasks, and one IN list
# of them all would be one huge statement.
REQUEUE_CHUNK = 1000


def annotator_exclude(*, project: Project, user: AbstractUser, by: AbstractUser | None, reason: str = "") -> Membership:
    """Exclude a member from the project's queue and release their live leases (their seats go back to
    the pool). Excluding someone already excluded keeps the first exclusion's date, admin and reason, and
    releases any lease taken since. ValidationError on `user` for a non-member, on `reason` when too long."""
    reason = _reason_clean(reason)
    with transaction.atomic():
        membership = _membership_locked(project=project, user=user)
        if membership.excluded_at is None:
            membership.excluded_at, membership.excluded_by, membership.exclusion_reason = timezone.now(), by, reason
            membership.save(update_fields=["excluded_at", "excluded_by", "exclusion_reason"])
            # The stored fit still weighs them: refit, so the annotators tab shows the crowd without them.
            label_model_fit_request(project=project)
            logger.info("project %s: %s excluded user %s", project.slug, _who(by), user.pk)
        assignments_release(project=project, annotator=user)
    return membership


def annotator_include(*, project: Project, user: AbstractUser, by: AbstractUser | None) -> Membership:
    """Let an excluded member take tasks again (a no-op for one not excluded).

    It does not undo a re-queue: the seats their judgments gave back stay with the queue (others may
    have filled them since), and those judgments keep counts_for_overlap false."""
    with transaction.atomic():
        membership = _membership_locked(project=project, user=user)
        if membership.excluded_at is not None:
            membership.excluded_at, membership.excluded_by, membership.exclusion_reason = None, None, ""
            membership.save(update_fields=["excluded_at", "excluded_by", "exclusion_reason"])
            label_model_fit_request(project=project)
            logger.info("project %s: %s re-included user %s", project.slug, _who(by), user.pk)
    return membership


def annotator_tasks_requeue(*, project: Project, user: AbstractUser, by: AbstractUser | None) -> int:
    """Give back every overlap seat the member's judgments hold, and return how many tasks that reopened.

    A seat is held by the judgment its submit counted: the first of the task's chain (a correction
    replaces it without counting again). Each such chain gets counts_for_overlap false, corrections
    included, its task's judgments_count one less, and a complete task that falls short of the overlap
    reopens. Gold tasks are left alone: they never close (as submission treats them), so they have no
    seat to give back. Idempotent: a second re-queue finds no seat held and reopens nothing.
    ValidationError on `user` for a non-member."""
    with transaction.atomic():
        _membership_locked(project=project, user=user)  # one re-queue of a member at a time
        task_ids = _seats_release(project=project, user=user)
        reopened = sum(_tasks_seat_return(project=project, task_ids=task_ids[start:start + REQUEUE_CHUNK])
                       for start in range(0, len(task_ids), REQUEUE_CHUNK))
    logger.info("project %s: %s re-queued the tasks of user %s (%s reopened)", project.slug, _who(by), user.pk, reopened)
    return reopened


def _seats_release(*, project: Project, user: AbstractUser) -> list[int]:
    """Mark the member's seat-holding judgments as holding none; the ids of their tasks, ascending.

    Judgment rows are locked before task rows, the order a correction takes them in (it locks the
    judgment it corrects with its task), so the two cannot deadlock."""
    seats = Judgment.objects.select_for_update(of=("self",)).filter(
        project=project, annotator=user, source="human", supersedes__isnull=True, counts_for_overlap=True,
        task__is_gold=False)
    task_ids = sorted(set(seats.values_list("task_id", flat=True)))
    for start in range(0, len(task_ids), REQUEUE_CHUNK):
        Judgment.objects.filter(project=project, annotator=user, source="human",
                                task_id__in=task_ids[start:start + REQUEUE_CHUNK]).update(counts_for_overlap=False)
    return task_ids


def _tasks_seat_return(*, project: Project, task_ids: list[int]) -> int:
    """One seat back on each task, under the tasks' row locks taken in id order: a submit on one of them
    waits, then counts on the new value (or ran first, and this counts on its). Returns the tasks reopened."""
    tasks = ComparisonTask.objects.filter(pk__in=task_ids)
    list(tasks.select_for_update().order_by("id").values_list("id", flat=True))
    short = {"status": ComparisonTask.Status.COMPLETE, "judgments_count__lte": project.overlap}
    reopened = tasks.filter(**short).count()
    tasks.update(judgments_count=Greatest(F("judgments_count") - 1, 0),
                 status=Case(When(**short, then=Value(ComparisonTask.Status.OPEN)), default=F("status")))
    return reopened


def _membership_locked(*, project: Project, user: AbstractUser) -> Membership:
    membership = (Membership.objects.select_for_update(of=("self",)).select_related("user", "excluded_by")
                  .filter(project=project, user=user).first())
    if membership is None:
        raise ValidationError({"user": f"user {user.pk} is not a member of this project"})
    return membership


def _reason_clean(reason: object) -> str:
    if not isinstance(reason, str) or len(reason) > EXCLUSION_REASON_MAX_CHARS or "\x00" in reason:
        raise ValidationError({"reason": f"must be text of at most {EXCLUSION_REASON_MAX_CHARS} characters"})
    return reason.strip()


def _who(user: AbstractUser | None) -> str:
    return f"user {user.pk}" if user is not None else "a command"
