"""A pairwise project whose tasks are real human pairs, for the benches that simulate annotators on it
(crowd_quality, active_learning): the one way they import the pairs."""
from __future__ import annotations

import io
import json
import random
from typing import Any


def pair_project_create(records: list[dict[str, Any]], *, name: str, slug: str, rng: random.Random, filename: str,
                        **fields: Any) -> tuple[Any, dict[int, tuple[dict[str, Any], dict[str, int]]]]:
    """(project, {task id: (its record, {response text: response id})}). The two answers of each record
    are imported in random order: imported first means the lower id and the first slot, and a truth
    that sat always on one side would hand every model's class prior the answer."""
    from labeling.models import ComparisonTask
    from labeling.services.imports import project_data_import
    from labeling.services.projects import project_create

    project = project_create(name=name, slug=slug, mode="pairwise", responses_per_task=2, likert_enabled=False,
                             flags_enabled=False, **fields)
    pairs = [[r["chosen"], r["rejected"]] for r in records]
    for pair in pairs:
        rng.shuffle(pair)
    lines = "\n".join(json.dumps({"id": f"{i}", "prompt": r["prompt"], "responses": pair})
                      for i, (r, pair) in enumerate(zip(records, pairs)))
    project_data_import(project=project, stream=io.BytesIO(lines.encode()), filename=filename)
    tasks = {}
    for task in ComparisonTask.objects.filter(project=project).select_related("prompt").prefetch_related("slots__response"):
        tasks[task.pk] = (records[int(task.prompt.external_id)], {s.response.text: s.response_id for s in task.slots.all()})
    return project, tasks
