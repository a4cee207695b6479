"""Test data and helpers shared by the labeling, config and browser tests: tasks imported through the
import service or made directly (make_tasks), human judgments written the way the judgment service
writes them (judgment + its pairs, one transaction) or submitted through it (submit), and an export
read back as bytes."""
from __future__ import annotations

import io
import itertools
import json

from django.db import transaction

from labeling.models import ComparisonTask, Judgment, PreferencePair, Prompt, Response
from labeling.services.assignment import Verdict, judgment_submit
from labeling.selectors.exports import ExportFilters
from labeling.services.exports import preferences_export
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


def make_tasks(project, n: int, *, k: int | None = None, gold: bool = False) -> list[ComparisonTask]:
    k = k or project.responses_per_task
    tasks = []
    for i in range(n):
        prompt = Prompt.objects.create(project=project, external_id=f"{'g' if gold else 'p'}{i}-{project.pk}", text=f"q{i}")
        responses = [Response.objects.create(prompt=prompt, text=f"r{j}", source="m") for j in range(k)]
        task = ComparisonTask.objects.create(
            project=project, prompt=prompt, is_gold=gold, gold_ranking=[[r.pk for r in responses]] if gold else None
        )
        for pos, r in enumerate(responses):
            task.slots.create(response=r, position=pos)
        tasks.append(task)
    return tasks


def submit(assignment, annotator, key=None, **kw):
    order = list(assignment.shown_order)
    kw.setdefault("ranking", [[rid] for rid in order])
    return judgment_submit(assignment=assignment, annotator=annotator, verdict=Verdict(**kw),
                           idempotency_key=key or f"k{assignment.pk}")


def export(project, fmt="trl", **filters) -> bytes:
    out = io.BytesIO()
    preferences_export(project=project, fmt=fmt, filters=ExportFilters.from_dict(filters), out=out)
    return out.getvalue()
