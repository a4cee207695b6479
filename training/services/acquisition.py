"""The queue's acquisition scores (Project.queue_order): recomputed after every successful reward run
(training.services.reward sends training.tasks.acquisition_scores_update), stored on the project's
open tasks, read by labeling's queue (task_assign_next's scored pick). The math is training.ml.acquisition."""
from __future__ import annotations

import random
from typing import Any

from django.conf import settings

from labeling.models import Project
from labeling.services.tasks import tasks_acquisition_scores_clear, tasks_acquisition_scores_set
from training.dataset import reward_groups
from training.models import ModelVersion
from training.selectors.acquisition import acquisition_reward_version, open_tasks_to_score
from training.services.execution import threads_set
from training.services.snapshots import snapshot_read

BATCH = 256  # tasks per forward pass batch and per UPDATE: each row lock is short
# The disagreement heads fit on at most this many of the version's labeled groups (a seeded sample):
# embedding them is the cost, and a few thousand pairs pin a 384-wide logistic head down well enough.
MAX_LABELED_GROUPS = 2000


def acquisition_scores_update(*, project: Project) -> dict[str, Any]:
    """Score every open non-gold task of the project by its queue order with the promoted reward model:
    uncertainty from its rewards, disagreement from an ensemble of heads on its frozen pooled states,
    fitted on the labeled groups of the snapshot it was trained on. A started-first project has its
    scores cleared. Returns what was done (the task's result, for the log)."""
    order = project.queue_order
    if order == Project.QueueOrder.STARTED_FIRST:
        return {"order": order, "scored": 0, "cleared": tasks_acquisition_scores_clear(project=project)}
    version = acquisition_reward_version(project=project)
    if version is None:
        return {"order": order, "scored": 0, "reason": "the project has no promoted reward model"}
    import numpy as np

    from training.ml import acquisition
    from training.ml.common import pick_device
    from training.ml.reward.artifact import load_reward_model

    threads_set()
    model, tokenizer, config = load_reward_model(version.artifact_path, device=pick_device(settings.PAIRWISE_DEVICE))

    def embed(prompts: list[str], responses: list[str]):
        return acquisition.embed_and_score(model, tokenizer, prompts, responses, max_length=config.max_length)

    facts: dict[str, Any] = {"order": order, "version": version.pk}
    weights = None
    if order == Project.QueueOrder.DISAGREEMENT:
        groups = _labeled_groups(version)
        if groups:
            _, pooled = embed([g["prompt"] for g in groups for _ in g["responses"]],
                              [r for g in groups for r in g["responses"]])
            diffs, start = [], 0
            for g in groups:
                diffs.append(acquisition.ranking_diffs(pooled[start:start + len(g["responses"])], g["ranking"]))
                start += len(g["responses"])
            diffs = [d for d in diffs if len(d)]
            if diffs:
                weights = acquisition.ensemble_fit(np.concatenate(diffs), seed=version.pk)
                facts.update(labeled_groups=len(groups), heads=len(weights))
        if weights is None:
            return {**facts, "scored": 0, "reason": "no labeled pairs in the reward model's snapshot"}
    scored, after = 0, 0
    while batch := open_tasks_to_score(project=project, after_id=after, limit=BATCH):
        rewards, pooled = embed([p for _, p, rs in batch for _ in rs], [r for _, _, rs in batch for r in rs])
        per_task, start = [], 0
        for _, _, rs in batch:
            per_task.append((rewards if weights is None else pooled)[start:start + len(rs)])
            start += len(rs)
        scores = (acquisition.uncertainty_scores(per_task) if weights is None
                  else acquisition.disagreement_scores(weights, per_task))
        scored += tasks_acquisition_scores_set(project=project, scores={t: float(s) for (t, _, _), s in zip(batch, scores)})
        after = batch[-1][0]
    return {**facts, "scored": scored}


def _labeled_groups(version: ModelVersion) -> list[dict[str, Any]]:
    """The ranked groups of the version's snapshot, both sides (the heads are never evaluated, so the
    held-out side is labels like any other), a seeded sample of MAX_LABELED_GROUPS at most."""
    if version.snapshot is None:
        return []
    data = reward_groups(snapshot_read(snapshot=version.snapshot))
    groups = data.train + data.held_out
    if len(groups) > MAX_LABELED_GROUPS:
        groups = random.Random(version.pk).sample(groups, MAX_LABELED_GROUPS)
    return groups
