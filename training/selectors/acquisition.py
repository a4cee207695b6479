"""Reads for the queue's acquisition scores: the open tasks to score, with the texts the reward model
is shown, and the reward version that scores them."""
from __future__ import annotations

from pathlib import Path

from labeling.models import ComparisonTask, Project, TaskResponse
from training.models import ModelVersion
from training.selectors.data import prompt_rm_text
from training.selectors.versions import REWARD_FOLDER_FILES


def acquisition_reward_version(*, project: Project) -> ModelVersion | None:
    """The project's own promoted reward model, if its folder holds a trained one. Not the shared base
    (model_version_promoted_get's fallback): a bare backbone has no head whose doubt would mean anything."""
    version = ModelVersion.objects.filter(project=project, kind=ModelVersion.Kind.REWARD, promoted=True,
                                          status=ModelVersion.Status.READY).first()
    if version is None:
        return None
    folder = Path(version.artifact_path)
    return version if any(all((folder / f).is_file() for f in files) for files in REWARD_FOLDER_FILES) else None


def open_tasks_to_score(*, project: Project, after_id: int, limit: int) -> list[tuple[int, str, list[str]]]:
    """[(task id, the prompt as the reward model sees it, the responses' texts in slot order)]: the
    project's open non-gold tasks with an id above after_id, oldest first (keyset batches)."""
    tasks = list(ComparisonTask.objects.filter(project=project, status=ComparisonTask.Status.OPEN, is_gold=False,
                                               pk__gt=after_id).select_related("prompt").order_by("pk")[:limit])
    texts: dict[int, list[str]] = {task.pk: [] for task in tasks}
    for task_id, text in (TaskResponse.objects.filter(task_id__in=list(texts)).order_by("task_id", "position")
                          .values_list("task_id", "response__text")):
        texts[task_id].append(text)
    return [(task.pk, prompt_rm_text(task.prompt), texts[task.pk]) for task in tasks if len(texts[task.pk]) >= 2]
