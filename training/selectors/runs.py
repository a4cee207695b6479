"""Reads of training runs and rounds (pipelines): lists, the live run of a kind, stale runs for the
reaper, and the JSON shapes the runs page polls."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Max, QuerySet
from django.utils import timezone

from labeling.models import Project
from training import plan, runspec
from training.models import TrainingRun



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


def run_last_get(*, project: Project, kind: str) -> TrainingRun | None:
    return TrainingRun.objects.filter(project=project, kind=kind).order_by("-created_at", "-id").first()


def round_live_exists(*, project: Project) -> bool:
    """Whether a step of some round is queued or running in the project."""
    return TrainingRun.objects.filter(
        project=project, pipeline_id__isnull=False, status__in=TrainingRun.ACTIVE_STATUSES,
    ).exists()


def runs_stale_list(*, now: datetime | None = None) -> QuerySet[TrainingRun]:
    """RUNNING runs whose last heartbeat (or start, if they never beat) is older than the stale limit."""
    cutoff = (now or timezone.now()) - settings.PAIRWISE_HEARTBEAT_STALE
    running = TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING)
    return running.filter(heartbeat_at__lt=cutoff) | running.filter(heartbeat_at__isnull=True, started_at__lt=cutoff)


def runs_queued_unpicked_list(*, now: datetime | None = None) -> QuerySet[TrainingRun]:
    """QUEUED runs whose task message was last sent longer than PAIRWISE_QUEUED_RESEND_AFTER ago:
    no worker took it, maybe because the broker lost it."""
    cutoff = (now or timezone.now()) - settings.PAIRWISE_QUEUED_RESEND_AFTER
    queued = TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED)
    return queued.filter(sent_at__lt=cutoff) | queued.filter(sent_at__isnull=True, created_at__lt=cutoff)


def request_max_processes() -> int:
    """The most processes a run request may ask for: settings.PAIRWISE_MAX_PROCESSES."""
    return int(getattr(settings, "PAIRWISE_MAX_PROCESSES", 0) or getattr(settings, "PAIRWISE_TRAIN_PROCESSES", 1) or 1)


def pipeline_spec(**options: Any) -> dict[str, Any]:
    """A parsed round spec (training.runspec.round_spec: policy_kind, auto_promote_margin,
    promote_metric, step_params, each step's params checked as that kind's run) with this
    deployment's defaults: settings.PAIRWISE_PIPELINE_POLICY_KIND (dpo) and
    settings.PAIRWISE_AUTO_PROMOTE_MARGIN (None: promotion stays manual). A bad option is a
    ValidationError naming its field; ids are checked against the project where the round starts
    (training.services.runspec.round_spec_check)."""
    try:
        return runspec.round_spec(
            options, max_processes=request_max_processes(),
            default_policy_kind=getattr(settings, "PAIRWISE_PIPELINE_POLICY_KIND", plan.DEFAULT_POLICY_KIND),
            default_margin=getattr(settings, "PAIRWISE_AUTO_PROMOTE_MARGIN", None),
        )
    except runspec.SpecError as exc:
        raise ValidationError(dict(exc.errors)) from None


def run_pipeline_spec(*, run: TrainingRun) -> dict[str, Any] | None:
    """A round step's spec: in its params, else (the scheduled first step keeps plain params) the defaults."""
    if run.pipeline_id is None:
        return None
    return (run.params or {}).get("pipeline") or pipeline_spec()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min"


def run_timing(*, run: TrainingRun, now: datetime | None = None) -> dict[str, Any]:
    """How long the run has trained (from started_at to its end, or now), its speed in steps (PPO:
    iterations) per second from the last recorded step, and, while it runs, the time left
    extrapolated from its progress at that speed: elapsed * (1 - progress) / progress. Each is None
    where it cannot be known yet (not started, no step or no progress recorded); `text` says it in words."""
    if run.started_at is None:
        return {"elapsed_s": None, "steps": None, "steps_per_s": None, "eta_s": None,
                "text": "waiting for a worker" if run.status in TrainingRun.ACTIVE_STATUSES else ""}
    end = run.finished_at or (now or timezone.now())
    elapsed = max(0.0, (end - run.started_at).total_seconds())
    x = "iteration" if run.kind == TrainingRun.Kind.PPO else "step"
    steps = max((p[x] for p in run.metrics_history or [] if isinstance(p.get(x), (int, float))), default=None)
    speed = steps / elapsed if steps and elapsed > 0 else None
    running = run.status == TrainingRun.Status.RUNNING
    progress = float(run.progress)
    eta = elapsed * (1.0 - progress) / progress if running and 0.0 < progress < 1.0 else None
    words = [f"{_duration(elapsed)} {'elapsed' if running else 'in all'}"]
    if speed is not None:
        words.append(f"{speed:.3g} {x}s/s")
    if running:
        words.append(f"about {_duration(eta)} left" if eta is not None else "time left unknown until it reports progress")
    return {"elapsed_s": round(elapsed, 1), "steps": steps, "steps_per_s": None if speed is None else round(speed, 4),
            "eta_s": None if eta is None else round(eta, 1), "text": " · ".join(words)}


def run_as_dict(run: TrainingRun) -> dict[str, Any]:
    """The JSON the runs page polls, and the API's run shape."""
    last = run.metrics_history[-1] if run.metrics_history else {}
    return {
        "timing": run_timing(run=run),
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


def pipeline_list(*, project: Project, limit: int = 10) -> list[dict[str, Any]]:
    """The latest rounds (runs sharing a pipeline_id), each with its planned steps, every step's run,
    status and progress, and the round's progress (done steps + the live step's fraction) / steps."""
    ids = list(
        TrainingRun.objects.filter(project=project, pipeline_id__isnull=False).values("pipeline_id")
        .annotate(started=Max("created_at")).order_by("-started").values_list("pipeline_id", flat=True)[:limit]
    )
    runs = list(TrainingRun.objects.filter(pipeline_id__in=ids).select_related("result_version", "base_version").order_by("created_at", "id"))
    return [_pipeline_as_dict(pipeline_id, [r for r in runs if r.pipeline_id == pipeline_id]) for pipeline_id in ids]


def _pipeline_as_dict(pipeline_id: Any, chain: list[TrainingRun]) -> dict[str, Any]:
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
    return {
        "pipeline_id": str(pipeline_id), "status": status, "stopped": stopped,
        "progress": round(done / len(spec["steps"]), 4) if status != "succeeded" else 1.0,
        "started_at": chain[0].created_at.isoformat(), "steps": steps,
        "policy_kind": spec["steps"][1], "auto_promote_margin": spec.get("auto_promote_margin"),
    }
