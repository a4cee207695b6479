"""Leasing: the annotator's current task and the prefetched next one, picked and seated in one
statement on Postgres (see the package docstring for the concurrency model)."""
from __future__ import annotations

import hashlib
import json
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import AbstractUser
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from labeling.models import Assignment, ComparisonTask, Project
from labeling.selectors.annotators import annotator_is_excluded
from labeling.services.assignment.release import assignments_expire_sweep

HELD_ASSIGNMENTS = 2
RECLAIM_BATCH = 100


@dataclass(frozen=True)
class NextResult:
    assignment: Assignment | None
    reason: str
    prefetched: Assignment | None = None


def task_assign_next(*, annotator: AbstractUser, project: Project, takes_seat: bool = True) -> NextResult:
    """The annotator's current assignment and the one after it, leasing new tasks as needed.

    reason says where the current one came from: "active" (already leased, e.g. after a
    reload or a prefetch), "gold", "started", "oldest", "scored" (by acquisition score, for a project
    whose queue_order is not started-first), or "empty" when nothing is left; with no assignment,
    "excluded" when an admin excluded the annotator from the project.

    takes_seat=False (a machine annotator judging beside the people): the lease holds no overlap seat
    (Assignment.holds_seat), so it never keeps a task from a person, and it may take any open or
    complete task this annotator has not had, in id order; gold tasks, which check people, are not served.
    """
    if annotator_is_excluded(project=project, user=annotator):
        # Their leases were released by the exclusion; one taken in a race with it is refused at submit.
        return NextResult(None, "excluded")
    _reclaim_lazily()
    held = _held_active(annotator=annotator, project=project)
    reasons = ["active"] * len(held)
    while len(held) < HELD_ASSIGNMENTS:
        lease_factor = 1 if not held else 2
        if not takes_seat:
            picked = _try_beside(annotator=annotator, project=project, lease_factor=lease_factor)
            if picked is None:
                break
            held.append(picked)
            reasons.append("beside")
            continue
        picked = _try_gold(annotator=annotator, project=project, lease_factor=lease_factor)
        if picked is None:
            picked = _try_scored(annotator=annotator, project=project, lease_factor=lease_factor)
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


def _try_scored(*, annotator, project: Project, lease_factor: int) -> tuple[Assignment, str] | None:
    """An acquisition order (uncertainty, disagreement): started tasks still come first, so overlap
    fills as fast as in started-first (an InstructGPT-style queue finishes what it began), and among
    equally started ones the highest acquisition_score wins. Only scored tasks are candidates; tasks
    no reward round has scored yet (a project just switched, a fresh import) are left to _try_queue,
    which is acquisition_score NULLS LAST with today's order among the nulls."""
    if project.queue_order == Project.QueueOrder.STARTED_FIRST:
        return None
    assignment = _lease(annotator=annotator, project=project, gold=False, lease_factor=lease_factor, scored=True)
    if assignment is None:
        return None
    return assignment, "started" if assignment.started else "scored"


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

# The acquisition orders' pick: the same seat rules, among scored tasks only, by the partial
# task_queue_scored_idx (empty for started-first projects, whose scores acquisition_scores_update
# clears, so today's queue pays nothing for it).
_PICK_SCORED_SQL = """
SELECT t.id, t.judgments_count FROM labeling_comparisontask t
WHERE t.project_id = %(project)s AND t.status = 'open' AND t.is_gold = %(gold)s AND t.acquisition_score IS NOT NULL
  AND (%(gold)s OR t.judgments_count + t.active_assignments < %(overlap)s)
  AND NOT EXISTS (
    SELECT 1 FROM labeling_assignment a WHERE a.task_id = t.id AND a.annotator_id = %(annotator)s OFFSET 0
  )
ORDER BY t.judgments_count DESC, t.active_assignments, t.acquisition_score DESC, t.id
LIMIT 1
FOR UPDATE OF t SKIP LOCKED
"""

# Pick, take the seat and create the assignment in one statement: one round trip and no
# explicit transaction on the hottest path. The shown order is computed in SQL with the same
# seeded hash as shown_order_for().
_LEASE_TEMPLATE = """
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
"""
_LEASE_SQL = _LEASE_TEMPLATE.format(pick=_PICK_SQL.strip())
_LEASE_SCORED_SQL = _LEASE_TEMPLATE.format(pick=_PICK_SCORED_SQL.strip())


# A seatless lease: any open or complete non-gold task the annotator has not had, by the project's
# (project, status, id) index. No row lock and no counter: it takes nothing another annotator could want,
# and the unique (task, annotator) constraint stops two of its own workers taking one task twice.
_BESIDE_SQL = """
INSERT INTO labeling_assignment (project_id, task_id, annotator_id, state, shown_order, leased_at, expires_at, holds_seat)
SELECT %(project)s, t.id, %(annotator)s, 'active',
  coalesce((SELECT jsonb_agg(s.response_id ORDER BY md5(t.id || ':' || %(annotator)s || ':' || s.response_id) COLLATE "C")
            FROM labeling_taskresponse s WHERE s.task_id = t.id), '[]'::jsonb),
  %(now)s, %(expires)s, false
FROM (
  SELECT t.id FROM labeling_comparisontask t
  WHERE t.project_id = %(project)s AND t.status IN ('open', 'complete') AND NOT t.is_gold
    AND NOT EXISTS (
      SELECT 1 FROM labeling_assignment a WHERE a.task_id = t.id AND a.annotator_id = %(annotator)s OFFSET 0
    )
  ORDER BY t.id LIMIT 1
) t
RETURNING id, task_id, shown_order
"""


def _try_beside(*, annotator, project: Project, lease_factor: int) -> Assignment | None:
    try:
        return _lease_beside_once(annotator=annotator, project=project, lease_factor=lease_factor)
    except IntegrityError:
        # Another worker of the same annotator took that task first: pick again.
        return _lease_beside_once(annotator=annotator, project=project, lease_factor=lease_factor)


def _lease_beside_once(*, annotator, project: Project, lease_factor: int) -> Assignment | None:
    now = timezone.now()
    expires = now + timedelta(seconds=project.lease_seconds * lease_factor)
    if connection.vendor != "postgresql":
        return _lease_beside_portable(annotator=annotator, project=project, now=now, expires=expires)
    guard = transaction.atomic() if connection.in_atomic_block else nullcontext()
    with guard, connection.cursor() as cursor:
        cursor.execute(_BESIDE_SQL, {"project": project.pk, "annotator": annotator.pk, "now": now, "expires": expires})
        row = cursor.fetchone()
    if row is None:
        return None
    assignment_id, task_id, shown_order = row
    assignment = Assignment(
        pk=assignment_id, project=project, task_id=task_id, annotator=annotator, state=Assignment.State.ACTIVE,
        shown_order=json.loads(shown_order) if isinstance(shown_order, str) else shown_order, leased_at=now,
        expires_at=expires, holds_seat=False,
    )
    assignment._state.adding, assignment._state.db = False, "default"
    assignment.started = False
    return assignment


def _lease_beside_portable(*, annotator, project: Project, now, expires) -> Assignment | None:
    with transaction.atomic():
        task = (ComparisonTask.objects.filter(project=project, is_gold=False, status__in=[
            ComparisonTask.Status.OPEN, ComparisonTask.Status.COMPLETE]).exclude(assignments__annotator=annotator)
            .order_by("id").first())
        if task is None:
            return None
        response_ids = list(task.slots.values_list("response_id", flat=True))
        assignment = Assignment.objects.create(
            project=project, task=task, annotator=annotator, state=Assignment.State.ACTIVE, holds_seat=False,
            shown_order=shown_order_for(task_id=task.pk, annotator_id=annotator.pk, response_ids=response_ids),
            leased_at=now, expires_at=expires,
        )
    assignment.started = False
    return assignment


def _lease(*, annotator, project: Project, gold: bool, lease_factor: int, scored: bool = False) -> Assignment | None:
    try:
        return _lease_once(annotator=annotator, project=project, gold=gold, lease_factor=lease_factor, scored=scored)
    except IntegrityError:
        # Two concurrent calls by the same annotator picked the same task; the other one has it.
        return _lease_once(annotator=annotator, project=project, gold=gold, lease_factor=lease_factor, scored=scored)


def _lease_once(*, annotator, project: Project, gold: bool, lease_factor: int, scored: bool = False) -> Assignment | None:
    if connection.vendor != "postgresql":
        return _lease_once_portable(annotator=annotator, project=project, gold=gold, lease_factor=lease_factor,
                                    scored=scored)
    now = timezone.now()
    expires = now + timedelta(seconds=project.lease_seconds * lease_factor)
    # One statement commits atomically on its own; a savepoint is only needed inside an outer
    # transaction, so that the IntegrityError retry can continue.
    guard = transaction.atomic() if connection.in_atomic_block else nullcontext()
    with guard, connection.cursor() as cursor:
        cursor.execute(_LEASE_SCORED_SQL if scored else _LEASE_SQL, {
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


def _lease_once_portable(*, annotator, project: Project, gold: bool, lease_factor: int,
                         scored: bool = False) -> Assignment | None:
    """The same pick with the ORM, for the embedded SQLite deployment. SQLite's IMMEDIATE
    transactions serialise writers, which stands in for SKIP LOCKED."""
    now = timezone.now()
    with transaction.atomic():
        candidates = ComparisonTask.objects.filter(project=project, status=ComparisonTask.Status.OPEN, is_gold=gold)
        if not gold:
            candidates = candidates.alias(
                seats=F("judgments_count") + F("active_assignments")).filter(seats__lt=project.overlap)
        order = ["-judgments_count", "active_assignments", "id"]
        if scored:
            candidates = candidates.filter(acquisition_score__isnull=False)
            order.insert(2, "-acquisition_score")
        task = candidates.exclude(assignments__annotator=annotator).order_by(*order).first()
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
