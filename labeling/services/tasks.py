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
