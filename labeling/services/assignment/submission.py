"""Submitting: a judgment (with its preference pairs and the task's counters, in one transaction),
a correction that supersedes one, or a demonstration in demonstrate mode. Retries are idempotent."""
from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from labeling.models import Assignment, ComparisonTask, Demonstration, Judgment, PreferencePair, Project
from labeling.services.assignment.locking import (
    AssignmentConflict, active_assignments_minus_one, assignment_active_check, assignment_lock,
)
from labeling.services.assignment.verdict import Verdict, verdict_validate
from labeling.services.judgments import preference_pairs_build
from labeling.services.label_models import label_model_fit_after_judgment


def judgment_submit(
    *, assignment: Assignment, annotator: AbstractUser, verdict: Verdict, idempotency_key: str,
    source: str = "human", machine: dict | None = None,
) -> Judgment:
    """Store the annotator's verdict with its pairs and counters in one transaction.

    A retry with the same key (or any second submit of the same assignment) returns the first
    judgment, so a double click or a network retry never stores two.

    source: "human", or "machine:<name>" for a machine annotator, whose judgment also keeps `machine`
    (what its judge said) and never counts toward a training round. The judgment holds an overlap seat
    exactly when its lease did (Assignment.holds_seat): a seatless one neither counts in judgments_count
    nor closes the task.
    """
    expired: AssignmentConflict | None = None
    try:
        with transaction.atomic():
            locked = assignment_lock(assignment_id=assignment.pk, annotator=annotator)
            if locked.state == Assignment.State.SUBMITTED:
                return _first_result(locked)
            try:
                assignment_active_check(assignment=locked)
            except AssignmentConflict as exc:
                if exc.code != "expired":
                    raise
                expired = exc  # commit the expiry, then report it
            if expired is None:
                judgment = _judgment_create(
                    assignment=locked, annotator=annotator, verdict=verdict, idempotency_key=idempotency_key,
                    source=source, machine=machine,
                )
                _submission_record(assignment=locked)
                if source == "human":  # the label models read only people's judgments
                    label_model_fit_after_judgment(project=locked.project)
                return judgment
    except IntegrityError:
        # The key was already used for another submission: a retry that lost a race.
        existing = Judgment.objects.filter(idempotency_key=idempotency_key, annotator=annotator).first()
        if existing is None:
            raise AssignmentConflict("This idempotency key was already used by someone else.", code="key_reused")
        return existing
    raise expired


def _first_result(assignment: Assignment) -> Judgment:
    judgment = Judgment.objects.filter(assignment=assignment).first()
    if judgment is None:
        raise AssignmentConflict("This assignment was already submitted.", code="submitted")
    return judgment


def _judgment_create(*, assignment: Assignment, annotator, verdict: Verdict, idempotency_key: str,
                     supersedes: Judgment | None = None, source: str = "human", machine: dict | None = None) -> Judgment:
    response_ids = list(assignment.shown_order)
    clean = verdict_validate(verdict=verdict, idempotency_key=idempotency_key, project=assignment.project,
                             response_ids=response_ids)
    judgment = Judgment.objects.create(
        project=assignment.project, task_id=assignment.task_id,
        assignment=assignment if supersedes is None else None, annotator=annotator,
        shown_order=response_ids, supersedes=supersedes, idempotency_key=idempotency_key,
        # A correction holds the seat its judgment held: none once an admin re-queued the task.
        counts_for_overlap=assignment.holds_seat if supersedes is None else supersedes.counts_for_overlap,
        source=source if supersedes is None else supersedes.source, machine=machine,
        counts_for_retrain=source == "human" if supersedes is None else supersedes.counts_for_retrain,
        ranking=clean.ranking, likert=clean.likert, flags=clean.flags, rationale=clean.rationale,
        both_bad=clean.both_bad, time_spent_ms=clean.time_spent_ms,
    )
    PreferencePair.objects.bulk_create(preference_pairs_build(judgment=judgment, prompt_id=assignment.task_prompt_id))
    return judgment


def _submission_record(*, assignment: Assignment) -> None:
    """Close the assignment and count the submission on its task, in one statement (a seatless lease
    only closes: its task's counters never counted it)."""
    assignment.state, assignment.finished_at = Assignment.State.SUBMITTED, timezone.now()
    if not assignment.holds_seat:
        Assignment.objects.filter(pk=assignment.pk).update(state=assignment.state, finished_at=assignment.finished_at)
        return None
    if connection.vendor != "postgresql":
        return _submission_record_portable(assignment=assignment)
    with connection.cursor() as cursor:
        cursor.execute(
            """WITH closed AS (
                 UPDATE labeling_assignment SET state = 'submitted', finished_at = %s WHERE id = %s
               )
               UPDATE labeling_comparisontask SET judgments_count = judgments_count + 1,
                 active_assignments = GREATEST(active_assignments - 1, 0),
                 status = CASE WHEN NOT is_gold AND judgments_count + 1 >= %s THEN 'complete' ELSE status END
               WHERE id = %s""",
            [assignment.finished_at, assignment.pk, assignment.project.overlap, assignment.task_id],
        )


def _submission_record_portable(*, assignment: Assignment) -> None:
    Assignment.objects.filter(pk=assignment.pk).update(state=assignment.state, finished_at=assignment.finished_at)
    ComparisonTask.objects.filter(pk=assignment.task_id).update(
        judgments_count=F("judgments_count") + 1, active_assignments=active_assignments_minus_one(),
        status=Case(When(is_gold=False, judgments_count__gte=assignment.project.overlap - 1,
                         then=Value(ComparisonTask.Status.COMPLETE)), default=F("status")),
    )


def judgment_correct(*, judgment: Judgment, annotator: AbstractUser, verdict: Verdict, idempotency_key: str) -> Judgment:
    """A new judgment that supersedes the old one. The old row stays for audit; its pairs go."""
    existing = Judgment.objects.filter(idempotency_key=idempotency_key, supersedes=judgment).first()
    if existing is not None:
        return existing
    try:
        return _judgment_correct_locked(
            judgment=judgment, annotator=annotator, verdict=verdict, idempotency_key=idempotency_key,
        )
    except IntegrityError:
        # The key is taken: by this correction's retry that lost a race, or by another submission.
        existing = Judgment.objects.filter(idempotency_key=idempotency_key, supersedes=judgment).first()
        if existing is None:
            raise AssignmentConflict("This idempotency key was already used for another judgment.", code="key_reused")
        return existing


def _judgment_correct_locked(*, judgment: Judgment, annotator, verdict: Verdict, idempotency_key: str) -> Judgment:
    with transaction.atomic():
        old = Judgment.objects.select_for_update().select_related("project", "task").get(pk=judgment.pk)
        if old.annotator_id != annotator.pk:
            raise AssignmentConflict("Only the annotator who made a judgment can correct it.", code="foreign")
        newer = Judgment.objects.filter(supersedes=old).first()
        if newer is not None and newer.idempotency_key == idempotency_key:
            return newer  # a concurrent retry of this correction got here first
        if newer is not None:
            raise AssignmentConflict("This judgment was already corrected; correct the newest one.", code="superseded")
        old.pairs.all().delete()
        source = Assignment(project=old.project, task=old.task, shown_order=old.shown_order)
        source.task_prompt_id = old.task.prompt_id
        return _judgment_create(
            assignment=source, annotator=annotator, verdict=verdict, idempotency_key=idempotency_key, supersedes=old,
        )


def demonstration_submit(
    *, assignment: Assignment, annotator: AbstractUser, text: str, idempotency_key: str, time_spent_ms: int = 0,
) -> Demonstration:
    """The ideal response for the task's prompt, in demonstrate mode; counted like a judgment."""
    expired: AssignmentConflict | None = None
    with transaction.atomic():
        locked = assignment_lock(assignment_id=assignment.pk, annotator=annotator)
        if locked.state == Assignment.State.SUBMITTED:
            existing = Demonstration.objects.filter(assignment=locked).first()
            if existing is not None:
                return existing
        try:
            assignment_active_check(assignment=locked)
        except AssignmentConflict as exc:
            if exc.code != "expired":
                raise
            expired = exc
        if expired is None:
            if locked.project.mode != Project.Mode.DEMONSTRATE:
                raise ValidationError({"text": "this project collects rankings, not demonstrations"})
            if not isinstance(text, str) or not text.strip() or "\x00" in text:
                raise ValidationError({"text": "must be non-empty text"})
            demonstration = Demonstration.objects.create(
                project=locked.project, prompt_id=locked.task_prompt_id, author=annotator, assignment=locked,
                text=text, idempotency_key=idempotency_key or None,
            )
            _submission_record(assignment=locked)
            return demonstration
    raise expired
