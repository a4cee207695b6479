"""Comparison tasks with their responses: the one writer used by imports, candidate generation and
blind A/B evaluations, so a task always gets its Response rows and its slots in slot order together."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from django.db import transaction

from labeling.models import ComparisonTask, Project, Prompt, Response, TaskResponse

BATCH = 2000


@dataclass(frozen=True)
class NewResponse:
    text: str
    source: str
    model_version_id: int | None = None
    generation: dict[str, Any] = field(default_factory=dict)


@dataclass
class NewTask:
    """A task to create. Its responses are shown in this order (slot i = responses[i])."""

    prompt: Prompt
    responses: Sequence[NewResponse]
    is_gold: bool = False
    status: str = ComparisonTask.Status.OPEN
    judgments_count: int = 0


@dataclass
class CreatedTask:
    task: ComparisonTask
    responses: list[Response]


def tasks_create(*, project: Project, tasks: Sequence[NewTask], batch_size: int = BATCH) -> list[CreatedTask]:
    """Insert the tasks, their responses and slots in bulk, in one transaction (all or nothing).

    A gold task is created with an empty answer (response ids exist only after the insert); the
    caller fills gold_ranking in from the returned rows."""
    created = [
        CreatedTask(
            task=ComparisonTask(project=project, prompt=spec.prompt, is_gold=spec.is_gold,
                                gold_ranking=[] if spec.is_gold else None, status=spec.status,
                                judgments_count=spec.judgments_count),
            responses=[Response(prompt=spec.prompt, text=r.text, source=r.source[:255], model_version_id=r.model_version_id,
                                generation=r.generation) for r in spec.responses],
        )
        for spec in tasks
    ]
    with transaction.atomic():
        Response.objects.bulk_create([r for c in created for r in c.responses], batch_size=batch_size)
        ComparisonTask.objects.bulk_create([c.task for c in created], batch_size=batch_size)
        TaskResponse.objects.bulk_create(
            [TaskResponse(task=c.task, response=r, position=i) for c in created for i, r in enumerate(c.responses)],
            batch_size=batch_size,
        )
    return created


def tasks_acquisition_scores_set(*, project: Project, scores: dict[int, float]) -> int:
    """Store the queue's acquisition scores ({task id: score}) on the project's open tasks; a task that
    was completed or archived meanwhile keeps none. One UPDATE per call (the caller batches): each
    row lock is held only for that statement, and the queue's SKIP LOCKED pick steps around it."""
    if not scores:
        return 0
    rows = list(ComparisonTask.objects.filter(project=project, status=ComparisonTask.Status.OPEN, pk__in=list(scores))
                .only("pk"))
    for row in rows:
        row.acquisition_score = float(scores[row.pk])
    return ComparisonTask.objects.bulk_update(rows, ["acquisition_score"])


def tasks_acquisition_scores_clear(*, project: Project) -> int:
    """Drop every score of the project (its queue is started-first again): the scored queue index then
    holds none of its tasks, and a later switch waits for fresh scores rather than using stale ones."""
    return ComparisonTask.objects.filter(project=project, acquisition_score__isnull=False).update(acquisition_score=None)
