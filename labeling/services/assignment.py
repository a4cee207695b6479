"""The annotator's queue: leasing tasks, skipping, lease expiry, and submitting judgments.

Concurrency model (Postgres): the pick locks one candidate task row with FOR UPDATE SKIP LOCKED
and re-checks its seat count on the locked version, so two annotators never take the last seat
of the same task; the unique (task, annotator) constraint backs "never the same task twice".
Lock order is always assignment before task, so submit, skip and expiry cannot deadlock.

Counters on ComparisonTask (judgments_count, active_assignments) replace COUNT queries: a task
has a free seat while judgments_count + active_assignments < overlap.

Prefetch: an annotator holds at most two active assignments, the one on screen and the next
one. The second is leased with a doubled lease, so once it is promoted it still has at least
one full lease of time left, with no extra UPDATE on the hot path.
"""
from __future__ import annotations

import hashlib
import json
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from labeling.models import (
    Assignment, ComparisonTask, Demonstration, Judgment, PreferencePair, Project,
)
from labeling.ranking import RankingError, ranking_validate
from labeling.services.judgments import preference_pairs_build

HELD_ASSIGNMENTS = 2
RECLAIM_BATCH = 100
MAX_RATIONALE_CHARS = 20_000
MAX_TIME_SPENT_MS = 24 * 3600 * 1000


class AssignmentConflict(Exception):
    """The assignment cannot take this action (expired, skipped, foreign); the API answers 409."""

    def __init__(self, message: str, *, code: str):
        super().__init__(message)
        self.message, self.code = message, code


@dataclass(frozen=True)
class NextResult:
    assignment: Assignment | None
    reason: str
    prefetched: Assignment | None = None


# --- leasing -------------------------------------------------------------------------------------

def task_assign_next(*, annotator: AbstractUser, project: Project) -> NextResult:
    """The annotator's current assignment and the one after it, leasing new tasks as needed.

    reason says where the current one came from: "active" (already leased, e.g. after a
    reload or a prefetch), "gold", "started", "oldest", or "empty" when nothing is left.
    """
    _reclaim_lazily()
    held = _held_active(annotator=annotator, project=project)
    reasons = ["active"] * len(held)
    while len(held) < HELD_ASSIGNMENTS:
        lease_factor = 1 if not held else 2
        picked = _try_gold(annotator=annotator, project=project, lease_factor=lease_factor)
        if picked is None:
            picked = _try_queue(annotator=annotator, project=project, lease_factor=lease_factor)
        if picked is None:
            break
        held.append(picked[0])
        reasons.append(picked[1])
    if not held:
        return NextResult(None, "empty")
    return NextResult(held[0], reasons[0], held[1] if len(held) > 1 else None)


_next_reclaim_at = 0.0
RECLAIM_EVERY_S = 1.0


def _reclaim_lazily() -> None:
    # At most once a second per process: expiry is measured in minutes, and this keeps a round
    # trip off most calls while still returning expired seats to the pool without a scheduler.
    global _next_reclaim_at
    if time.monotonic() >= _next_reclaim_at:
        _next_reclaim_at = time.monotonic() + RECLAIM_EVERY_S
        assignments_expire_sweep(limit=RECLAIM_BATCH)


def _held_active(*, annotator: AbstractUser, project: Project) -> list[Assignment]:
    return list(Assignment.objects.raw(
        "SELECT * FROM labeling_assignment WHERE annotator_id = %s AND project_id = %s AND state = 'active'"
        " AND expires_at > %s ORDER BY leased_at, id LIMIT %s",
        [annotator.pk, project.pk, connection.ops.adapt_datetimefield_value(timezone.now()), HELD_ASSIGNMENTS],
    ))


def _try_gold(*, annotator, project: Project, lease_factor: int) -> tuple[Assignment, str] | None:
    if project.gold_rate <= 0 or random.random() >= project.gold_rate:
        return None
    # Gold tasks never complete: every annotator may be checked against every gold task once.
    assignment = _lease(annotator=annotator, project=project, gold=True, lease_factor=lease_factor)
    return (assignment, "gold") if assignment else None


def _try_queue(*, annotator, project: Project, lease_factor: int) -> tuple[Assignment, str] | None:
    assignment = _lease(annotator=annotator, project=project, gold=False, lease_factor=lease_factor)
    if assignment is None:
        return None
    return assignment, "started" if assignment.started else "oldest"


# The per-candidate NOT EXISTS carries OFFSET 0 so Postgres keeps it as a subplan probing the
# unique (task, annotator) index for each candidate in queue-index order. Without it the planner
# turns it into an anti-join over all of the annotator's assignments (3x slower with history).
_PICK_SQL = """
SELECT t.id, t.judgments_count FROM labeling_comparisontask t
WHERE t.project_id = %(project)s AND t.status = 'open' AND t.is_gold = %(gold)s
  AND (%(gold)s OR t.judgments_count + t.active_assignments < %(overlap)s)
  AND NOT EXISTS (
    SELECT 1 FROM labeling_assignment a WHERE a.task_id = t.id AND a.annotator_id = %(annotator)s OFFSET 0
  )
ORDER BY t.judgments_count DESC, t.active_assignments, t.id
LIMIT 1
FOR UPDATE OF t SKIP LOCKED
"""

# Pick, take the seat and create the assignment in one statement: one round trip and no
# explicit transaction on the hottest path. The shown order is computed in SQL with the same
# seeded hash as shown_order_for().
_LEASE_SQL = """
WITH picked AS ({pick}),
seat AS (
  UPDATE labeling_comparisontask t SET active_assignments = t.active_assignments + 1
  FROM picked WHERE t.id = picked.id RETURNING t.id, picked.judgments_count
)
INSERT INTO labeling_assignment (project_id, task_id, annotator_id, state, shown_order, leased_at, expires_at)
SELECT %(project)s, seat.id, %(annotator)s, 'active',
  coalesce((SELECT jsonb_agg(s.response_id ORDER BY md5(seat.id || ':' || %(annotator)s || ':' || s.response_id) COLLATE "C")
            FROM labeling_taskresponse s WHERE s.task_id = seat.id), '[]'::jsonb),
  %(now)s, %(expires)s
FROM seat
RETURNING id, task_id, shown_order, (SELECT judgments_count FROM seat)
""".format(pick=_PICK_SQL.strip())


def _lease(*, annotator, project: Project, gold: bool, lease_factor: int) -> Assignment | None:
    try:
        return _lease_once(annotator=annotator, project=project, gold=gold, lease_factor=lease_factor)
    except IntegrityError:
        # Two concurrent calls by the same annotator picked the same task; the other one has it.
        return _lease_once(annotator=annotator, project=project, gold=gold, lease_factor=lease_factor)


def _lease_once(*, annotator, project: Project, gold: bool, lease_factor: int) -> Assignment | None:
    if connection.vendor != "postgresql":
        return _lease_once_portable(annotator=annotator, project=project, gold=gold, lease_factor=lease_factor)
    now = timezone.now()
    expires = now + timedelta(seconds=project.lease_seconds * lease_factor)
    # One statement commits atomically on its own; a savepoint is only needed inside an outer
    # transaction, so that the IntegrityError retry can continue.
    guard = transaction.atomic() if connection.in_atomic_block else nullcontext()
    with guard, connection.cursor() as cursor:
        cursor.execute(_LEASE_SQL, {
            "project": project.pk, "gold": gold, "overlap": project.overlap, "annotator": annotator.pk,
            "now": now, "expires": expires,
        })
        row = cursor.fetchone()
    if row is None:
        return None
    assignment_id, task_id, shown_order, judgments_count = row
    if isinstance(shown_order, str):
        shown_order = json.loads(shown_order)
    assignment = Assignment(
        pk=assignment_id, project=project, task_id=task_id, annotator=annotator, state=Assignment.State.ACTIVE,
        shown_order=shown_order, leased_at=now, expires_at=expires,
    )
    assignment._state.adding, assignment._state.db = False, "default"
    assignment.started = judgments_count > 0
    return assignment


def _lease_once_portable(*, annotator, project: Project, gold: bool, lease_factor: int) -> Assignment | None:
    """The same pick with the ORM, for the embedded SQLite deployment. SQLite's IMMEDIATE
    transactions serialise writers, which stands in for SKIP LOCKED."""
    now = timezone.now()
    with transaction.atomic():
        candidates = ComparisonTask.objects.filter(project=project, status=ComparisonTask.Status.OPEN, is_gold=gold)
        if not gold:
            candidates = candidates.alias(
                seats=F("judgments_count") + F("active_assignments")).filter(seats__lt=project.overlap)
        task = (candidates.exclude(assignments__annotator=annotator)
                .order_by("-judgments_count", "active_assignments", "id").first())
        if task is None:
            return None
        ComparisonTask.objects.filter(pk=task.pk).update(active_assignments=F("active_assignments") + 1)
        response_ids = list(task.slots.values_list("response_id", flat=True))
        assignment = Assignment.objects.create(
            project=project, task=task, annotator=annotator, state=Assignment.State.ACTIVE,
            shown_order=shown_order_for(task_id=task.pk, annotator_id=annotator.pk, response_ids=response_ids),
            leased_at=now, expires_at=now + timedelta(seconds=project.lease_seconds * lease_factor),
        )
    assignment.started = task.judgments_count > 0
    return assignment


def shown_order_for(*, task_id: int, annotator_id: int, response_ids: list[int]) -> list[int]:
    """Each assignment's own order, seeded by its (task, annotator) identity, so it is reproducible
    (the lease computes the same order in SQL)."""
    return sorted(response_ids, key=lambda rid: hashlib.md5(f"{task_id}:{annotator_id}:{rid}".encode()).hexdigest())


# --- skip and expiry -----------------------------------------------------------------------------

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


# --- submission ----------------------------------------------------------------------------------

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


def _likert_clean(likert, response_ids, project: Project, errors: dict) -> dict:
    if not likert:
        return {}
    if not project.likert_enabled:
        errors["likert"] = "Likert ratings are disabled in this project"
        return {}
    if not isinstance(likert, dict):
        errors["likert"] = "must map response ids to ratings 1..7"
        return {}
    clean = {}
    for key, value in likert.items():
        rid = _response_key(key, response_ids)
        if rid is None:
            errors["likert"] = f"unknown response {key!r}"
        elif isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 7:
            errors["likert"] = f"rating for response {rid} must be an integer from 1 to 7, got {value!r}"
        else:
            clean[str(rid)] = value
    return clean


def _flags_clean(flags, response_ids, project: Project, errors: dict) -> dict:
    if not flags:
        return {}
    if not project.flags_enabled:
        errors["flags"] = "flags are disabled in this project"
        return {}
    known = {key for key, _ in project.flag_choices}
    if not isinstance(flags, dict):
        errors["flags"] = "must map response ids to lists of flag keys"
        return {}
    clean = {}
    for key, values in flags.items():
        rid = _response_key(key, response_ids)
        if rid is None:
            errors["flags"] = f"unknown response {key!r}"
        elif not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            errors["flags"] = f"flags for response {rid} must be a list of flag keys"
        elif set(values) - known:
            errors["flags"] = f"unknown flags {sorted(set(values) - known)}"
        elif values:
            clean[str(rid)] = sorted(set(values))
    return clean


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
    with transaction.atomic():
        old = Judgment.objects.select_for_update().select_related("project", "task").get(pk=judgment.pk)
        if old.annotator_id != annotator.pk:
            raise AssignmentConflict("Only the annotator who made a judgment can correct it.", code="foreign")
        if Judgment.objects.filter(supersedes=old).exists():
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
