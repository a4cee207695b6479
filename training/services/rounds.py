"""The training round (pipeline): start one, and the per-project scheduled check that starts a round
when enough new judgments exist. The round's shape (steps, their params, promotion) is
training.plan; each next step is queued by run_succeed (training.services.runs.pipeline_advance)."""
from __future__ import annotations

import logging
import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.utils import timezone

from labeling.models import Project
from training import runspec
from training.models import TrainingRun
from training.selectors.data import reward_new_judgments_count
from training.selectors.runs import pipeline_spec, round_live_exists, run_active_get, run_last_get
from training.services.runs import RunAlreadyActive, run_queue
from training.services.runspec import round_spec_check, spec_error_text

logger = logging.getLogger(__name__)


def pipeline_start(*, project: Project, spec: dict[str, Any] | None = None, trigger: str = "manual",
                   requested_by: AbstractUser | None = None, plain_params: bool = False) -> TrainingRun:
    """Queue a round's first step (reward retrain) under a new pipeline_id. Every step's params are
    checked now against the project and the requester (round_spec_check), so a round is refused at
    once, not at its third step. RunAlreadyActive when a reward run is live. plain_params keeps the
    first run's params to {"trigger"} (default spec)."""
    spec = spec or pipeline_spec()
    first = round_spec_check(project=project, user=requested_by, spec=spec)
    params = {"trigger": trigger} if plain_params else {**first.params, "trigger": trigger, "pipeline": spec}
    return run_queue(project=project, kind=spec["steps"][0], params=params, base_version=first.version,
                     requested_by=requested_by, pipeline_id=uuid.uuid4())


def reward_retrain_check(*, project_id: int, **options: Any) -> TrainingRun | None:
    """The per-project beat schedule: start a training round when >= project.retrain_min_judgments new
    judgments exist since the last succeeded reward run (or since the data of a cancelled one: a
    cancelled round waits for new judgments) unless the project's settings pause it. Only human
    judgments count, and imported ones whose import asked (training.selectors.data.reward_new_judgments_count). The
    keyword arguments come from the schedule's kwargs (training.runspec.schedule_options: the round
    options, checked like a request; a schedule with bad ones starts nothing and logs why); none given
    means the defaults. After a failed reward run it waits PAIRWISE_RETRY_AFTER before trying again;
    it never starts a round while a round's step is live."""
    try:
        options = runspec.schedule_options({"project_id": project_id, **options})
        spec = pipeline_spec(**options)
    except (runspec.SpecError, ValidationError) as exc:
        text = spec_error_text(exc) if isinstance(exc, ValidationError) else str(exc)
        logger.error("the training-round schedule of project %s has bad kwargs, so it starts nothing: %s", project_id, text)
        return None
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
    custom = any(v not in ("", None, {}) for v in options.values())
    try:
        return pipeline_start(project=project, spec=spec, trigger="schedule", plain_params=not custom)
    except RunAlreadyActive:
        return None
    except ValidationError as exc:  # another project's snapshot, say: the schedule is refused as a request would be
        logger.error("the training-round schedule of project %s is refused: %s", project_id, spec_error_text(exc))
        return None
