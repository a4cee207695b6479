"""The training round (pipeline): start one, and the per-project scheduled check that starts a round
when enough new judgments exist. The round's shape (steps, their params, promotion) is
training.plan; each next step is queued by run_succeed (training.services.runs.pipeline_advance)."""
from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.utils import timezone

from labeling.models import Project
from training import plan
from training.models import TrainingRun
from training.selectors.data import reward_new_judgments_count
from training.selectors.runs import pipeline_spec, round_live_exists, run_active_get, run_last_get
from training.services.runs import RunAlreadyActive, run_queue
from training.services.snapshots import snapshot_mix_check


def pipeline_start(*, project: Project, spec: dict[str, Any] | None = None, trigger: str = "manual",
                   requested_by: AbstractUser | None = None, plain_params: bool = False) -> TrainingRun:
    """Queue a round's first step (reward retrain) under a new pipeline_id. RunAlreadyActive when a
    reward run is live. plain_params keeps the first run's params to {"trigger"} (default spec)."""
    spec = spec or pipeline_spec()
    first = spec["steps"][0]
    for snapshot_id in plan.round_step_params(spec=spec, kind=first).get("mix_snapshots") or ():
        snapshot_mix_check(project=project, snapshot_id=int(snapshot_id), user=requested_by)  # refused now, not at run time
    params = {"trigger": trigger} if plain_params else {
        **plan.round_step_params(spec=spec, kind=first), "trigger": trigger, "pipeline": spec,
    }
    return run_queue(project=project, kind=first, params=params, requested_by=requested_by, pipeline_id=uuid.uuid4())


def reward_retrain_check(
    *, project_id: int, policy_kind: str = "", auto_promote_margin: float | None = None, promote_metric: str = "",
    step_params: dict[str, Any] | None = None,
) -> TrainingRun | None:
    """The per-project beat schedule: start a training round when >= project.retrain_min_judgments new
    judgments exist since the last succeeded reward run, unless the project's settings pause it. The
    keyword arguments come from the schedule's kwargs; none given means the defaults. After a failed reward run it waits
    PAIRWISE_RETRY_AFTER before trying again; it never starts a round while a round's step is live."""
    project = Project.objects.filter(pk=project_id, deleted_at__isnull=True).first()
    if project is None or project.retrain_paused:
        return None
    if run_active_get(project=project, kind=TrainingRun.Kind.REWARD) is not None:
        return None
    if round_live_exists(project=project):
        return None
    if reward_new_judgments_count(project=project) < max(1, project.retrain_min_judgments):
        return None
    last = run_last_get(project=project, kind=TrainingRun.Kind.REWARD)
    retry_after = getattr(settings, "PAIRWISE_RETRY_AFTER", None) or settings.PAIRWISE_HEARTBEAT_STALE * 15
    if last is not None and last.status == TrainingRun.Status.FAILED and last.finished_at and \
            timezone.now() - last.finished_at < retry_after:
        return None
    custom = bool(policy_kind or auto_promote_margin is not None or promote_metric or step_params)
    spec = pipeline_spec(policy_kind=policy_kind, auto_promote_margin=auto_promote_margin,
                         promote_metric=promote_metric or plan.DEFAULT_PROMOTE_METRIC, step_params=step_params)
    try:
        return pipeline_start(project=project, spec=spec, trigger="schedule", plain_params=not custom)
    except RunAlreadyActive:
        return None
