"""Reads for the training registry and runs. No writes here; those live in training.services."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import Max, QuerySet
from django.utils import timezone

from labeling.models import Judgment, Project
from training.models import ModelVersion, TrainingRun


def run_get(*, run_id: int) -> TrainingRun | None:
    return TrainingRun.objects.select_related("project", "result_version", "base_version").filter(pk=run_id).first()


def run_list(*, project: Project | None = None, kind: str | None = None, status: str | None = None) -> QuerySet[TrainingRun]:
    runs = TrainingRun.objects.select_related("project", "result_version", "base_version").order_by("-created_at", "-id")
    if project is not None:
        runs = runs.filter(project=project)
    if kind:
        runs = runs.filter(kind=kind)
    if status:
        runs = runs.filter(status=status)
    return runs


def run_active_get(*, project: Project, kind: str) -> TrainingRun | None:
    return TrainingRun.objects.filter(project=project, kind=kind, status__in=TrainingRun.ACTIVE_STATUSES).first()


def runs_stale_list(*, now: datetime | None = None) -> QuerySet[TrainingRun]:
    """RUNNING runs whose last heartbeat (or start, if they never beat) is older than the stale limit."""
    cutoff = (now or timezone.now()) - settings.PAIRWISE_HEARTBEAT_STALE
    running = TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING)
    return running.filter(heartbeat_at__lt=cutoff) | running.filter(heartbeat_at__isnull=True, started_at__lt=cutoff)


def model_version_list(*, project: Project | None = None, kind: str | None = None, include_base: bool = True) -> QuerySet[ModelVersion]:
    versions = ModelVersion.objects.select_related("project", "parent").order_by("-created_at", "-id")
    if project is not None:
        versions = versions.filter(project=project) | (versions.filter(project__isnull=True) if include_base else versions.none())
    if kind:
        versions = versions.filter(kind=kind)
    return versions


def model_version_get(*, version_id: int) -> ModelVersion | None:
    return ModelVersion.objects.select_related("project").filter(pk=version_id).first()


def model_version_promoted_get(*, project: Project | None, kind: str) -> ModelVersion | None:
    """The project's promoted version of a kind, else the promoted shared base model of that kind."""
    found = None
    if project is not None:
        found = ModelVersion.objects.filter(project=project, kind=kind, promoted=True, status=ModelVersion.Status.READY).first()
    if found is None:
        found = (
            ModelVersion.objects.filter(project__isnull=True, kind=kind, promoted=True, status=ModelVersion.Status.READY)
            .order_by("-created_at").first()
        )
    return found


def judgments_for_training(*, project: Project) -> QuerySet[Judgment]:
    """Live judgments: a correction supersedes the row it replaces, so only chain heads count."""
    return (
        Judgment.objects.filter(project=project, superseded_by__isnull=True)
        .select_related("task__prompt")
        .order_by("id")
    )


def reward_last_trained_judgment_id(*, project: Project) -> int:
    """The highest judgment id a succeeded reward run has trained on (0 when none has)."""
    runs = TrainingRun.objects.filter(project=project, kind=TrainingRun.Kind.REWARD, status=TrainingRun.Status.SUCCEEDED)
    best = 0
    for params in runs.values_list("params", flat=True):
        best = max(best, int((params or {}).get("data_until_judgment_id") or 0))
    return best


def reward_new_judgments_count(*, project: Project) -> int:
    since = reward_last_trained_judgment_id(project=project)
    return judgments_for_training(project=project).filter(pk__gt=since).count()


def judgment_max_id(*, project: Project) -> int:
    return judgments_for_training(project=project).aggregate(m=Max("id"))["m"] or 0


def run_as_dict(run: TrainingRun) -> dict[str, Any]:
    """The JSON the runs page polls, and the API's run shape."""
    last = run.metrics_history[-1] if run.metrics_history else {}
    return {
        "id": run.pk,
        "project": run.project.slug if run.project_id else None,
        "kind": run.kind,
        "status": run.status,
        "progress": round(float(run.progress), 4),
        "heartbeat_at": run.heartbeat_at.isoformat() if run.heartbeat_at else None,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "created_at": run.created_at.isoformat() if run.created_at else None,
        "result_version": run.result_version_id,
        "base_version": run.base_version_id,
        "pipeline_id": str(run.pipeline_id) if run.pipeline_id else None,
        "worker": run.worker,
        "error": run.error,
        "log_tail": run.log_tail,
        "last_metrics": last,
        "params": run.params,
    }


def version_as_dict(version: ModelVersion) -> dict[str, Any]:
    metrics = {k: v for k, v in (version.metrics or {}).items() if k != "history"}
    return {
        "id": version.pk,
        "project": version.project.slug if version.project_id else None,
        "kind": version.kind,
        "name": version.name,
        "base": version.base,
        "parent": version.parent_id,
        "artifact_path": version.artifact_path,
        "status": version.status,
        "promoted": version.promoted,
        "snapshot": version.snapshot_id,
        "metrics": metrics,
        "config": version.config,
        "created_at": version.created_at.isoformat() if version.created_at else None,
    }
