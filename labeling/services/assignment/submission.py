"""Submitting: a judgment (with its preference pairs and the task's counters, in one transaction),
a correction that supersedes one, or a demonstration in demonstrate mode. Retries are idempotent."""
from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from labeling.models import Assignment, ComparisonTask, Demonstration, Judgment, PreferencePair, Project
from labeling.ranking import RankingError, ranking_validate
from labeling.services.assignment.release import (
    AssignmentConflict, _locked_for, _minus_one, _require_active,
)
from labeling.services.judgments import preference_pairs_build

MAX_RATIONALE_CHARS = 20_000
MAX_TIME_SPENT_MS = 24 * 3600 * 1000


def judgment_submit(
    *, assignment: Assignment, annotator: AbstractUser, ranking: object, likert: object = None, flags: object = None,
    rationale: str = "", time_spent_ms: int = 0, idempotency_key: str, both_bad: bool = False,
) -> Judgment:
    """Store the annotator's verdict with its pairs and counters in one transaction.

    A retry with the same key (or any second submit of the same assignment) returns the first
    judgment, so a double click or a network retry never stores two.
    """
    expired: AssignmentConflict | None = None
    try:
        with transaction.atomic():
            locked = _locked_for(assignment_id=assignment.pk, annotator=annotator)
            if locked.state == Assignment.State.SUBMITTED:
                return _first_result(locked)
            try:
                _require_active(locked)
            except AssignmentConflict as exc:
                if exc.code != "expired":
                    raise
                expired = exc  # commit the expiry, then report it
            if expired is None:
                judgment = _judgment_create(
                    assignment=locked, annotator=annotator, ranking=ranking, likert=likert, flags=flags,
                    rationale=rationale, time_spent_ms=time_spent_ms, idempotency_key=idempotency_key,
                    both_bad=both_bad,
                )
                _submission_record(assignment=locked)
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


def _judgment_create(*, assignment: Assignment, annotator, ranking, likert, flags, rationale, time_spent_ms,
                     idempotency_key: str, both_bad: bool, supersedes: Judgment | None = None) -> Judgment:
    response_ids = list(assignment.shown_order)
    fields = judgment_fields_validate(
        project=assignment.project, response_ids=response_ids, ranking=ranking, likert=likert, flags=flags,
        rationale=rationale, time_spent_ms=time_spent_ms, idempotency_key=idempotency_key, both_bad=both_bad,
    )
    judgment = Judgment.objects.create(
        project=assignment.project, task_id=assignment.task_id,
        assignment=assignment if supersedes is None else None, annotator=annotator,
        shown_order=response_ids, supersedes=supersedes, **fields,
    )
    PreferencePair.objects.bulk_create(preference_pairs_build(judgment=judgment, prompt_id=assignment.task_prompt_id))
    return judgment


def judgment_fields_validate(
    *, project: Project, response_ids: list[int], ranking, likert, flags, rationale, time_spent_ms,
    idempotency_key: str, both_bad: bool,
) -> dict:
    errors: dict[str, str] = {}
    try:
        ranking = ranking_validate(ranking, response_ids)
    except RankingError as exc:
        errors["ranking"] = str(exc)
    if both_bad and "ranking" not in errors and len(ranking) != 1:
        errors["both_bad"] = "a both-bad verdict ranks every response as tied"
    likert = _likert_clean(likert, response_ids, project, errors)
    if project.mode == Project.Mode.RANK and not errors:
        _ranking_against_likert(ranking, likert, errors)
    flags = _flags_clean(flags, response_ids, project, errors)
    if not isinstance(rationale, str) or len(rationale) > MAX_RATIONALE_CHARS or "\x00" in rationale:
        errors["rationale"] = f"must be text of at most {MAX_RATIONALE_CHARS} characters"
    if isinstance(time_spent_ms, bool) or not isinstance(time_spent_ms, int) or time_spent_ms < 0:
        errors["time_spent_ms"] = "must be a non-negative integer"
    if not isinstance(idempotency_key, str) or not 1 <= len(idempotency_key) <= 128:
        errors["idempotency_key"] = "must be 1 to 128 characters"
    if errors:
        raise ValidationError(errors)
    return {
        "ranking": ranking, "likert": likert, "flags": flags, "rationale": rationale, "both_bad": both_bad,
        "time_spent_ms": min(time_spent_ms, MAX_TIME_SPENT_MS), "idempotency_key": idempotency_key,
    }


def _response_key(key, response_ids: list[int]) -> int | None:
    try:
        value = int(key)
    except (TypeError, ValueError):
        return None
    return value if value in response_ids else None


def _per_response(field_name: str, mapping, response_ids, errors: dict, *, enabled: bool, disabled: str,
                  shape: str, clean_one) -> dict:
    """{response id: cleaned value} from an optional per-response map (likert, flags); clean_one(rid,
    value) gives (error, value), a value of None leaves the response out. Problems go to
    errors[field_name], the last one wins."""
    if not mapping:
        return {}
    if not enabled:
        errors[field_name] = disabled
        return {}
    if not isinstance(mapping, dict):
        errors[field_name] = f"must map response ids to {shape}"
        return {}
    clean = {}
    for key, value in mapping.items():
        rid = _response_key(key, response_ids)
        problem, cleaned = (f"unknown response {key!r}", None) if rid is None else clean_one(rid, value)
        if problem:
            errors[field_name] = problem
        elif cleaned is not None:
            clean[str(rid)] = cleaned
    return clean


def _likert_clean(likert, response_ids, project: Project, errors: dict) -> dict:
    def rating(rid: int, value):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 7:
            return f"rating for response {rid} must be an integer from 1 to 7, got {value!r}", None
        return None, value

    return _per_response("likert", likert, response_ids, errors, enabled=project.likert_enabled,
                         disabled="Likert ratings are disabled in this project", shape="ratings 1..7", clean_one=rating)


def _ranking_against_likert(ranking: list[list[int]], likert: dict, errors: dict) -> None:
    """K-way: a ranking that puts a response below one rated strictly lower contradicts the ratings
    the annotator gave in the same judgment (ties are no contradiction)."""
    placed: list[tuple[int, int]] = []  # (response, rating) of the groups above
    for group in ranking:
        for below in group:
            rating = likert.get(str(below))
            worse = next(((rid, r) for rid, r in placed if rating is not None and r < rating), None)
            if worse is not None:
                errors["ranking"] = (f"response {worse[0]} (rated {worse[1]}) is ranked above response {below} "
                                     f"(rated {rating}): the ranking contradicts the ratings")
                return
        placed.extend((rid, likert[str(rid)]) for rid in group if str(rid) in likert)


def _flags_clean(flags, response_ids, project: Project, errors: dict) -> dict:
    def flag_keys(rid: int, values):
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            return f"flags for response {rid} must be a list of flag keys", None
        unknown = set(values) - {key for key, _ in project.flag_choices}
        if unknown:
            return f"unknown flags {sorted(unknown)}", None
        return None, sorted(set(values)) or None  # no flags: nothing to store

    return _per_response("flags", flags, response_ids, errors, enabled=project.flags_enabled,
                         disabled="flags are disabled in this project", shape="lists of flag keys", clean_one=flag_keys)


def _submission_record(*, assignment: Assignment) -> None:
    """Close the assignment and count the submission on its task, in one statement."""
    assignment.state, assignment.finished_at = Assignment.State.SUBMITTED, timezone.now()
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
        judgments_count=F("judgments_count") + 1, active_assignments=_minus_one("active_assignments"),
        status=Case(When(is_gold=False, judgments_count__gte=assignment.project.overlap - 1,
                         then=Value(ComparisonTask.Status.COMPLETE)), default=F("status")),
    )


def judgment_correct(
    *, judgment: Judgment, annotator: AbstractUser, ranking: object, likert: object = None, flags: object = None,
    rationale: str = "", time_spent_ms: int = 0, idempotency_key: str, both_bad: bool = False,
) -> Judgment:
    """A new judgment that supersedes the old one. The old row stays for audit; its pairs go."""
    existing = Judgment.objects.filter(idempotency_key=idempotency_key, supersedes=judgment).first()
    if existing is not None:
        return existing
    try:
        return _judgment_correct_locked(
            judgment=judgment, annotator=annotator, ranking=ranking, likert=likert, flags=flags, rationale=rationale,
            time_spent_ms=time_spent_ms, idempotency_key=idempotency_key, both_bad=both_bad,
        )
    except IntegrityError:
        # The key is taken: by this correction's retry that lost a race, or by another submission.
        existing = Judgment.objects.filter(idempotency_key=idempotency_key, supersedes=judgment).first()
        if existing is None:
            raise AssignmentConflict("This idempotency key was already used for another judgment.", code="key_reused")
        return existing


def _judgment_correct_locked(*, judgment: Judgment, annotator, ranking, likert, flags, rationale, time_spent_ms,
                             idempotency_key: str, both_bad: bool) -> Judgment:
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
            assignment=source, annotator=annotator, ranking=ranking, likert=likert, flags=flags, rationale=rationale,
            time_spent_ms=time_spent_ms, idempotency_key=idempotency_key, both_bad=both_bad, supersedes=old,
        )


def demonstration_submit(
    *, assignment: Assignment, annotator: AbstractUser, text: str, idempotency_key: str, time_spent_ms: int = 0,
) -> Demonstration:
    """The ideal response for the task's prompt, in demonstrate mode; counted like a judgment."""
    expired: AssignmentConflict | None = None
    with transaction.atomic():
        locked = _locked_for(assignment_id=assignment.pk, annotator=annotator)
        if locked.state == Assignment.State.SUBMITTED:
            existing = Demonstration.objects.filter(assignment=locked).first()
            if existing is not None:
                return existing
        try:
            _require_active(locked)
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
