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


# ------------------------------------------------------------------------ policy evaluation reads


def version_flag_rates(*, version_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Per model version, over live human judgments of tasks showing its responses (in any project,
    A/B evaluations included): responses judged, the share flagged at all, and each flag's share."""
    from labeling.models import TaskResponse

    ids = sorted({int(v) for v in version_ids if v is not None})
    if not ids:
        return {}
    by_task: dict[int, list[tuple[int, int]]] = {}
    for task_id, response_id, version_id in TaskResponse.objects.filter(
        response__model_version_id__in=ids
    ).values_list("task_id", "response_id", "response__model_version_id").iterator(2000):
        by_task.setdefault(task_id, []).append((response_id, version_id))
    seen: dict[int, int] = {v: 0 for v in ids}
    flagged: dict[int, int] = {v: 0 for v in ids}
    per_flag: dict[int, dict[str, int]] = {v: {} for v in ids}
    tasks = list(by_task)
    for start in range(0, len(tasks), 2000):
        judgments = Judgment.objects.filter(
            task_id__in=tasks[start:start + 2000], superseded_by__isnull=True, source="human",
        ).values_list("task_id", "flags")
        for task_id, flags in judgments.iterator(2000):
            for response_id, version_id in by_task[task_id]:
                keys = set((flags or {}).get(str(response_id)) or [])
                seen[version_id] += 1
                flagged[version_id] += bool(keys)
                for key in keys:
                    per_flag[version_id][key] = per_flag[version_id].get(key, 0) + 1
    return {
        v: {"responses_judged": seen[v], "any_flag_rate": flagged[v] / seen[v] if seen[v] else None,
            "flag_rates": {k: c / seen[v] for k, c in sorted(per_flag[v].items())}}
        for v in ids
    }


def pipeline_list(*, project: Project, limit: int = 10) -> list[dict[str, Any]]:
    """The latest rounds (runs sharing a pipeline_id), each with its planned steps, every step's run,
    status and progress, and the round's progress (done steps + the live step's fraction) / steps."""
    from training.services_policy import run_pipeline_spec

    ids = list(
        TrainingRun.objects.filter(project=project, pipeline_id__isnull=False).values("pipeline_id")
        .annotate(started=Max("created_at")).order_by("-started").values_list("pipeline_id", flat=True)[:limit]
    )
    runs = list(TrainingRun.objects.filter(pipeline_id__in=ids).select_related("result_version", "base_version").order_by("created_at", "id"))
    out = []
    for pipeline_id in ids:
        chain = [r for r in runs if r.pipeline_id == pipeline_id]
        spec = run_pipeline_spec(run=chain[0])
        steps, done, status, stopped = [], 0.0, "running", ""
        by_kind = {r.kind: r for r in chain}
        for kind in spec["steps"]:
            run = by_kind.get(kind)
            steps.append({
                "kind": kind, "run_id": run.pk if run else None, "status": run.status if run else "pending",
                "progress": round(float(run.progress), 4) if run else 0.0,
                "result_version": run.result_version_id if run else None,
                "promotion": (run.params or {}).get("promotion") if run else None,
            })
            if run is not None:
                done += 1.0 if run.status == TrainingRun.Status.SUCCEEDED else float(run.progress)
                stopped = stopped or (run.params or {}).get("pipeline_stopped", "")
        last = chain[-1]
        if any(r.status in (TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED) for r in chain):
            status = "failed"
        elif any(r.status in TrainingRun.ACTIVE_STATUSES for r in chain):
            status = "running"
        elif last.kind == spec["steps"][-1]:
            status = "succeeded"
        elif stopped:
            status = "stopped"
        out.append({
            "pipeline_id": str(pipeline_id), "status": status, "stopped": stopped,
            "progress": round(done / len(spec["steps"]), 4) if status != "succeeded" else 1.0,
            "started_at": chain[0].created_at.isoformat(), "steps": steps,
            "policy_kind": spec["steps"][1], "auto_promote_margin": spec.get("auto_promote_margin"),
        })
    return out


def ab_evaluation_list(*, project: Project) -> list[dict[str, Any]]:
    """The blind A/B evaluations created from this project: the pairwise project, versions, run and
    how many of its tasks were judged."""
    runs = TrainingRun.objects.filter(kind=TrainingRun.Kind.CANDIDATES, params__ab__source_project_id=project.pk) \
        .select_related("project").order_by("-created_at", "-id")
    out = []
    for run in runs:
        ab = run.params["ab"]
        out.append({
            "project": run.project.slug, "project_name": run.project.name, "versions": ab["versions"], "run_id": run.pk,
            "status": run.status, "progress": round(float(run.progress), 4),
            "tasks": run.project.tasks.count(), "judgments": Judgment.objects.filter(project=run.project, superseded_by__isnull=True).count(),
        })
    return out


def ab_leaderboard(*, project: Project, rounds: int = 200, seed: int = 0) -> list[dict[str, Any]]:
    """Bradley-Terry ratings of model versions (Elo scale) with percentile-bootstrap 95% intervals,
    from live human judgments in every blind A/B project made from this project. The fit is
    labeling.stats.bradley_terry_bootstrap (the quality dashboard's, Chatbot Arena's method)."""
    from labeling import stats
    from labeling.models import Response
    from labeling.selectors.quality import judgment_rows

    ab_projects = Project.objects.filter(pk__in=TrainingRun.objects.filter(
        kind=TrainingRun.Kind.CANDIDATES, params__ab__source_project_id=project.pk).values("project_id"))
    rows = [row for ab in ab_projects for row in judgment_rows(project=ab, human_only=True)]
    response_ids = sorted({rid for row in rows for rid in row.response_ids})
    version_of: dict[int, int | None] = {}
    for start in range(0, len(response_ids), 2000):
        version_of.update(Response.objects.filter(pk__in=response_ids[start:start + 2000]).values_list("pk", "model_version_id"))
    players: dict[int, int] = {}
    battles: list[tuple[int, int, float]] = []
    wins: dict[int, float] = {}
    for row in rows:
        for (a, b), outcome in row.outcomes.items():
            va, vb = version_of.get(a), version_of.get(b)
            if va is None or vb is None or va == vb:
                continue
            ia, ib = players.setdefault(va, len(players)), players.setdefault(vb, len(players))
            battles.append((ia, ib, (outcome + 1) / 2))
            wins[ia] = wins.get(ia, 0.0) + (outcome + 1) / 2
            wins[ib] = wins.get(ib, 0.0) + (1 - outcome) / 2
    if not players:
        return []
    ratings, lower, upper = stats.bradley_terry_bootstrap(battles, len(players), rounds=rounds, seed=seed)
    names = dict(ModelVersion.objects.filter(pk__in=list(players)).values_list("pk", "name"))
    counts: dict[int, int] = {}
    for a, b, _ in battles:
        counts[a] = counts.get(a, 0) + 1
        counts[b] = counts.get(b, 0) + 1
    version_ids = list(players)
    order = sorted(range(len(version_ids)), key=lambda i: -ratings[i])
    return [
        {"rank": n + 1, "version_id": version_ids[i], "name": names.get(version_ids[i], "?"),
         "rating": float(ratings[i]), "ci_low": float(lower[i]), "ci_high": float(upper[i]),
         "battles": counts.get(i, 0), "win_share": wins.get(i, 0.0) / max(counts.get(i, 0), 1)}
        for n, i in enumerate(order)
    ]
