"""Test data for quality and export tests: tasks imported through the import service, and human
judgments written the way the judgment service writes them (judgment + its pairs, one transaction)."""
from __future__ import annotations

import io
import itertools
import json

from django.db import transaction

from labeling.models import ComparisonTask, Judgment, PreferencePair
from labeling.services.imports import project_data_import
from labeling.services.judgments import preference_pairs_build

_keys = itertools.count()


def import_rows(project, *rows, filename="data.jsonl", **kw):
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    return project_data_import(project=project, stream=io.BytesIO(data), filename=filename, **kw)


def tasks_with_responses(project, prompts: dict[str, list]) -> list[ComparisonTask]:
    """{prompt text: [response text or {"text", "source"}]} -> one task per prompt, in order."""
    import_rows(project, *({"id": p, "prompt": p, "responses": r} for p, r in prompts.items()))
    return list(ComparisonTask.objects.filter(project=project).order_by("id"))


def ids(task) -> list[int]:
    return [slot.response_id for slot in task.slots.order_by("position")]


@transaction.atomic
def judge(task, user, ranking, *, shown=None, supersedes=None, **fields) -> Judgment:
    """ranking as tie groups of slot positions, e.g. [[1], [0]] (position 1 best)."""
    rids = ids(task)
    judgment = Judgment.objects.create(
        project=task.project, task=task, annotator=user, ranking=[[rids[i] for i in g] for g in ranking],
        shown_order=[rids[i] for i in (shown if shown is not None else range(len(rids)))],
        idempotency_key=f"test:{next(_keys)}", supersedes=supersedes, **fields,
    )
    PreferencePair.objects.bulk_create(preference_pairs_build(judgment=judgment))
    return judgment
