"""Invariants the write paths keep, checked against the rows: run after a crash, a restore or a
chaos test. Nothing here writes; each problem names the row and what is wrong with it.

- ComparisonTask.judgments_count = its judgments that hold an overlap seat (a correction replaces,
  it does not add; a judgment whose seat an admin re-queued holds none: counts_for_overlap) plus the
  demonstrations submitted through its assignments.
- ComparisonTask.active_assignments = its assignments in state active that hold a seat (expired leases
  count until a sweep or a submit marks them expired, as the counter does; a machine annotator's seatless
  lease, Assignment.holds_seat false, never counts).
- A non-gold task holds at most `overlap` active + submitted assignments (a submitted one whose
  judgment was re-queued holds no seat), is open while short of overlap and complete at it
  (imported preferences close a task at one verdict, whatever overlap).
- One current human judgment per (task, annotator); every submitted assignment has its judgment
  or demonstration, and a judgment's assignment is its own (same task and annotator, submitted).
- A current judgment's ranking covers its task's responses and its stored preference pairs are
  exactly those the ranking expands to (labeling.ranking); a superseded judgment has none.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterator

from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet

from labeling.models import (
    MACHINE_SOURCE_PREFIX, Assignment, ComparisonTask, Demonstration, Judgment, PreferencePair, Project, TaskResponse,
)
from labeling.ranking import RankingError, ranking_pairs, ranking_validate

CHUNK = 2000


@dataclass(frozen=True)
class IntegrityProblem:
    check: str
    subject: str
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.check}: {self.subject}: {self.detail}"


def integrity_problems(*, project: Project | None = None) -> list[IntegrityProblem]:
    """Every broken invariant in the project (all projects when None); empty when all hold."""
    scope = Q() if project is None else Q(project=project)
    problems: list[IntegrityProblem] = []
    for check in (_task_counters, _task_seats, _task_statuses, _assignment_results, _duplicate_judgments,
                  _judgment_pairs):
        problems.extend(check(scope))
    return problems


def _counted_tasks(scope: Q) -> QuerySet[ComparisonTask]:
    # Joins with DISTINCT counts rather than one correlated subquery per task: one pass over each
    # table (a task has only about `overlap` rows of each kind, so the join stays small).
    return ComparisonTask.objects.filter(scope).annotate(
        # A chain of corrections is counted once, by its first judgment: the one its submit counted.
        current_judgments=Count("judgments", filter=Q(judgments__supersedes__isnull=True,
                                                      judgments__counts_for_overlap=True), distinct=True),
        demonstrations=Count("assignments__demonstration", distinct=True),
        active_rows=Count("assignments", filter=Q(assignments__state=Assignment.State.ACTIVE,
                                                  assignments__holds_seat=True), distinct=True),
    )


def _task_counters(scope: Q) -> Iterator[IntegrityProblem]:
    tasks = _counted_tasks(scope).filter(
        ~Q(judgments_count=F("current_judgments") + F("demonstrations")) | ~Q(active_assignments=F("active_rows"))
    ).order_by("id")
    for task in tasks:
        stored = task.current_judgments + task.demonstrations
        if task.judgments_count != stored:
            yield IntegrityProblem("task_judgments_count", f"task {task.pk}",
                                   f"judgments_count {task.judgments_count}, {stored} judgments/demonstrations stored")
        if task.active_assignments != task.active_rows:
            yield IntegrityProblem("task_active_assignments", f"task {task.pk}",
                                   f"active_assignments {task.active_assignments}, {task.active_rows} active rows")


def _task_seats(scope: Q) -> Iterator[IntegrityProblem]:
    seated = Q(assignments__judgment__isnull=True) | Q(assignments__judgment__counts_for_overlap=True)
    held = Count("assignments", filter=Q(assignments__state=Assignment.State.ACTIVE, assignments__holds_seat=True)
                 | Q(seated, assignments__state=Assignment.State.SUBMITTED))
    tasks = (ComparisonTask.objects.filter(scope, is_gold=False).annotate(held=held)
             .filter(held__gt=F("project__overlap")).values_list("id", "held", "project__overlap").order_by("id"))
    for task_id, n, overlap in tasks:
        yield IntegrityProblem("task_over_assigned", f"task {task_id}",
                               f"{n} active + submitted assignments, overlap {overlap}")


def _task_statuses(scope: Q) -> Iterator[IntegrityProblem]:
    tasks = ComparisonTask.objects.filter(scope, is_gold=False)
    full_but_open = tasks.filter(status=ComparisonTask.Status.OPEN, judgments_count__gte=F("project__overlap"))
    imported = Exists(Judgment.objects.filter(task=OuterRef("pk")).exclude(source="human")
                      .exclude(source__startswith=MACHINE_SOURCE_PREFIX))
    short_but_complete = tasks.filter(~imported, status=ComparisonTask.Status.COMPLETE,
                                      judgments_count__lt=F("project__overlap"))
    for task_id, n in full_but_open.values_list("id", "judgments_count").order_by("id"):
        yield IntegrityProblem("task_status", f"task {task_id}", f"open with {n} judgments, overlap reached")
    for task_id, n in short_but_complete.values_list("id", "judgments_count").order_by("id"):
        yield IntegrityProblem("task_status", f"task {task_id}", f"complete with only {n} judgments")


def _assignment_results(scope: Q) -> Iterator[IntegrityProblem]:
    missing = Assignment.objects.filter(scope, state=Assignment.State.SUBMITTED).exclude(
        Exists(Judgment.objects.filter(assignment=OuterRef("pk")))
    ).exclude(Exists(Demonstration.objects.filter(assignment=OuterRef("pk"))))
    for assignment_id in missing.values_list("id", flat=True).order_by("id"):
        yield IntegrityProblem("assignment_without_result", f"assignment {assignment_id}",
                               "submitted, but no judgment or demonstration")
    foreign = Judgment.objects.filter(scope, assignment__isnull=False).exclude(
        task=F("assignment__task"), annotator=F("assignment__annotator"), assignment__state=Assignment.State.SUBMITTED,
    )
    for judgment_id, assignment_id in foreign.values_list("id", "assignment_id").order_by("id"):
        yield IntegrityProblem("judgment_assignment_mismatch", f"judgment {judgment_id}",
                               f"assignment {assignment_id} is not a submitted assignment of its task and annotator")


def _duplicate_judgments(scope: Q) -> Iterator[IntegrityProblem]:
    groups = (Judgment.objects.filter(scope, supersedes__isnull=True, annotator__isnull=False)
              .values("task_id", "annotator_id").annotate(n=Count("*")).filter(n__gt=1).order_by("task_id"))
    for group in groups:
        yield IntegrityProblem("duplicate_judgment", f"task {group['task_id']}",
                               f"{group['n']} current judgments by annotator {group['annotator_id']}")


def _judgment_pairs(scope: Q) -> Iterator[IntegrityProblem]:
    """Chunked by id, so a project of millions of judgments is checked in bounded memory."""
    rows = Judgment.objects.filter(scope).annotate(superseded=Exists(Judgment.objects.filter(supersedes=OuterRef("pk"))))
    last = 0
    while True:
        chunk = list(rows.filter(id__gt=last).order_by("id").values_list(
            "id", "project_id", "task_id", "task__prompt_id", "ranking", "superseded")[:CHUNK])
        if not chunk:
            return
        last = chunk[-1][0]
        yield from _chunk_pair_problems(chunk)


def _chunk_pair_problems(chunk: list[tuple]) -> Iterator[IntegrityProblem]:
    stored: dict[int, list[tuple]] = {}
    for judgment_id, *pair in PreferencePair.objects.filter(judgment_id__in=[row[0] for row in chunk]).values_list(
            "judgment_id", "project_id", "prompt_id", "chosen_id", "rejected_id"):
        stored.setdefault(judgment_id, []).append(tuple(pair))
    slots: dict[int, list[int]] = {}
    for task_id, response_id in TaskResponse.objects.filter(task_id__in={row[2] for row in chunk}).values_list(
            "task_id", "response_id"):
        slots.setdefault(task_id, []).append(response_id)
    for judgment_id, project_id, task_id, prompt_id, ranking, superseded in chunk:
        subject, pairs = f"judgment {judgment_id}", stored.get(judgment_id, [])
        if superseded:
            if pairs:
                yield IntegrityProblem("superseded_pairs", subject, f"superseded, still has {len(pairs)} pairs")
            continue
        try:
            ranking_validate(ranking, slots.get(task_id, []))
        except RankingError as exc:
            yield IntegrityProblem("judgment_ranking", subject, f"ranking {ranking} against task {task_id}: {exc}")
            continue
        expected = {(project_id, prompt_id, chosen, rejected) for chosen, rejected in ranking_pairs(ranking)}
        if len(pairs) != len(expected) or set(pairs) != expected:
            missing, extra = len(expected - set(pairs)), len(set(pairs) - expected) + len(pairs) - len(set(pairs))
            yield IntegrityProblem("judgment_pairs", subject,
                                   f"{len(pairs)} pairs stored, {len(expected)} expected ({missing} missing, {extra} extra)")
