"""The run state machine. Every status change of a TrainingRun happens here, and every task enqueue.

A run's life: run_queue (QUEUED, task sent by name after commit) -> run_start (RUNNING, under a row
lock; a duplicate delivery finds it RUNNING and returns) -> heartbeats while it trains
(training.services.execution) -> one of run_succeed (the ModelVersion is registered in the same
transaction), run_fail, run_cancel, or runs_reap_stale (the worker died and nothing else will
notice). Single flight is the database's partial unique constraint on (project, kind) over
QUEUED/RUNNING runs, not a check in Python.
"""
from __future__ import annotations

import logging
import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from config.tasks_send import task_send_on_commit
from config.jobs import JobReaper, jobs_reap_stale, jobs_resend_lost
from config.db import db_connection_ensure
from labeling.models import Project
from training import plan
from training.models import ModelVersion, TrainingRun
from training.selectors.runs import run_active_get, run_pipeline_spec, runs_queued_unpicked_list, runs_stale_list
from training.selectors.versions import model_version_promoted_get
from training.services.runspec import round_step_check, run_spec_check
from training.services.versions import model_version_card_write, model_version_promote, model_version_register

logger = logging.getLogger(__name__)

LOG_TAIL_CHARS = 8000
MAX_HISTORY_POINTS = 2000


class RunAlreadyActive(ValidationError):
    """Single flight: a QUEUED or RUNNING run of this kind already exists for the project."""

    def __init__(self, run: TrainingRun):
        self.run = run
        super().__init__(f"A {run.kind} run is already {run.status} for this project (run {run.pk}).", code="run_active")


class RunAborted(Exception):
    """The run stopped being RUNNING under the worker's feet (cancelled, or reaped as stale)."""


def run_create(
    *, project: Project, kind: str, params: dict[str, Any] | None = None, base_version: ModelVersion | None = None,
    requested_by: AbstractUser | None = None, pipeline_id: Any = None,
) -> TrainingRun:
    """A QUEUED run, or RunAlreadyActive when the database's single-flight constraint refuses it."""
    if kind not in TrainingRun.Kind.values:
        raise ValidationError({"kind": f"Unknown run kind {kind!r}."})
    if project.deleted_at is not None:
        raise ValidationError("The project is deleted.")
    try:
        with transaction.atomic():
            return TrainingRun.objects.create(
                project=project, kind=kind, params=params or {}, base_version=base_version,
                requested_by=requested_by, pipeline_id=pipeline_id,
            )
    except IntegrityError:
        active = run_active_get(project=project, kind=kind)
        if active is None:
            raise
        raise RunAlreadyActive(active) from None


def run_queue(
    *, project: Project, kind: str, params: dict[str, Any] | None = None, base_version: ModelVersion | None = None,
    requested_by: AbstractUser | None = None, pipeline_id: Any = None,
) -> TrainingRun:
    """Create a QUEUED run and send its task once the transaction commits (a rolled-back run sends nothing)."""
    with transaction.atomic():
        run = run_create(
            project=project, kind=kind, params=params, base_version=base_version, requested_by=requested_by,
            pipeline_id=pipeline_id,
        )
        _run_send(run)
    return run


def _run_send(run: TrainingRun) -> None:
    """Send the run's task after the commit, and record the send (the row is the caller's to lock)."""
    run.sent_at, run.sends = timezone.now(), run.sends + 1
    TrainingRun.objects.filter(pk=run.pk).update(sent_at=run.sent_at, sends=run.sends)
    task_send_on_commit(plan.TASK_OF_KIND[run.kind], run_id=run.pk)


def run_request(
    *, project: Project, kind: str, trigger: str, requested_by: AbstractUser | None = None, send: bool = True,
    spec: dict[str, Any] | None = None, **options: Any,
) -> TrainingRun:
    """A run a person asks for (API, dashboard, command): `spec` (and `options`) are the request's options, parsed and
    checked (training.services.runspec.run_spec_check: unknown keys, bad values and other projects'
    ids are refused, the per-kind defaults filled in), then the run is queued with them as its params;
    with send=False it is only created, for a caller that runs it in the foreground
    (manage.py train_reward_model --sync)."""
    checked = run_spec_check(project=project, user=requested_by, kind=kind, spec={**(spec or {}), **options})
    make = run_queue if send else run_create
    return make(project=project, kind=kind, params={"trigger": trigger, **checked.params}, base_version=checked.version,
                requested_by=requested_by)


def run_start(*, run_id: int, worker: str = "") -> TrainingRun | None:
    """QUEUED -> RUNNING under a row lock; None when the run is gone or not QUEUED (a redelivery)."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.status != TrainingRun.Status.QUEUED:
            return None
        now = timezone.now()
        run.status, run.started_at, run.heartbeat_at = TrainingRun.Status.RUNNING, now, now
        run.worker = (worker or f"pid={os.getpid()}")[:255]
        run.save(update_fields=["status", "started_at", "heartbeat_at", "worker"])
    return run


def run_heartbeat(
    *, run_id: int, progress: float | None = None, metrics: list[dict[str, Any]] | None = None,
    log_lines: list[str] | None = None,
) -> bool:
    """Record a sign of life (plus progress, metric points and log lines). False if the run is no longer RUNNING."""
    now = timezone.now()
    if progress is None and not metrics and not log_lines:
        return TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.RUNNING).update(heartbeat_at=now) == 1
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.status != TrainingRun.Status.RUNNING:
            return False
        fields = ["heartbeat_at"]
        run.heartbeat_at = now
        if progress is not None:
            run.progress = min(1.0, max(0.0, float(progress)))
            fields.append("progress")
        if metrics:
            history = list(run.metrics_history or []) + [plan.jsonable(m) for m in metrics]
            while len(history) > MAX_HISTORY_POINTS:
                history = history[::2]
            run.metrics_history = history
            fields.append("metrics_history")
        if log_lines:
            run.log_tail = (run.log_tail + "".join(line.rstrip("\n") + "\n" for line in log_lines))[-LOG_TAIL_CHARS:]
            fields.append("log_tail")
        run.save(update_fields=fields)
    return True


def run_params_update(*, run_id: int, **params: Any) -> None:
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        run.params = {**(run.params or {}), **plan.jsonable(params)}
        run.save(update_fields=["params"])


def run_succeed(
    *, run_id: int, version_fields: dict[str, Any] | None = None,
    inside: Callable[[TrainingRun], None] | None = None, promote: bool = False,
) -> tuple[TrainingRun, ModelVersion | None] | None:
    """RUNNING -> SUCCEEDED, registering (and with promote, promoting) the produced version in the
    same transaction. `inside` commits the run's other results with its status. A run of a round
    (pipeline_id) queues the round's next step in it too (pipeline_advance; the task is sent on commit).

    None when the run is no longer RUNNING (reaped or cancelled meanwhile): then nothing is registered
    and the caller removes the artifact it made.
    """
    db_connection_ensure(what=f"finishing run {run_id}")  # a database restart during the save is not a failure
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.status != TrainingRun.Status.RUNNING:
            return None
        version = model_version_register(**version_fields) if version_fields else None
        if version is not None and promote:
            version = model_version_promote(version=version)
        if inside is not None:
            inside(run)  # the run's other results, committed with its status or not at all
        run.status, run.progress, run.finished_at = TrainingRun.Status.SUCCEEDED, 1.0, timezone.now()
        run.heartbeat_at = run.finished_at
        run.result_version = version
        run.save(update_fields=["status", "progress", "finished_at", "heartbeat_at", "result_version"])
        if run.pipeline_id is not None:
            pipeline_advance(run=run, version=version)
    return run, version


def pipeline_advance(*, run: TrainingRun, version: ModelVersion | None) -> TrainingRun | None:
    """Called by run_succeed inside its transaction (the run row is locked):
    queue the round's next step with the same pipeline_id. Where the round cannot go on, the reason
    goes to the run's params["pipeline_stopped"] and nothing is queued."""
    spec = run_pipeline_spec(run=run)
    kind = plan.round_next_kind(spec=spec, kind=run.kind) if spec else None
    if kind is None:
        return None
    base_version, stopped, nxt = None, "", None
    if kind in plan.POLICY_KINDS and model_version_promoted_get(project=run.project, kind=ModelVersion.Kind.POLICY) is None:
        stopped = "no promoted policy to retrain (run manage.py install_base_models)"
    if kind == plan.EVALUATE:
        base_version = version
        if version is None or version.kind != ModelVersion.Kind.POLICY:
            stopped = "the policy step registered no version"
    if not stopped:
        try:  # the stored spec is checked again, as a request would be: it cannot bring what a request may not
            step = round_step_check(project=run.project, user=run.requested_by, spec=spec, kind=kind)
            nxt = run_queue(project=run.project, kind=kind, base_version=base_version or step.version,
                            pipeline_id=run.pipeline_id, requested_by=run.requested_by,
                            params={**step.params, "trigger": "pipeline", "pipeline": spec})
        except RunAlreadyActive as exc:
            stopped = f"a {kind} run ({exc.run.pk}) was already live"
        except ValidationError as exc:
            stopped = "; ".join(exc.messages)
    if stopped:
        logger.warning("pipeline %s stopped after run %s: %s", run.pipeline_id, run.pk, stopped)
        run.params = {**(run.params or {}), "pipeline_stopped": stopped}
        run.save(update_fields=["params"])
    return nxt


def run_succeed_with_version(
    *, run_id: int, output_dir: Path, version_fields: dict[str, Any], promote: bool = False,
) -> ModelVersion | None:
    """The end of a training run: run_succeed registering the folder it trained as a version, whose
    model card is then written; None (and the folder removed, so no orphan is left) when the run was
    reaped or cancelled while it finished."""
    result = run_succeed(run_id=run_id, version_fields=version_fields, promote=promote)
    if result is None:
        shutil.rmtree(output_dir, ignore_errors=True)
        return None
    model_version_card_write(version=result[1])
    return result[1]


def run_fail(*, run_id: int, error: str) -> bool:
    """QUEUED/RUNNING -> FAILED. False if the run had already ended."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.status not in TrainingRun.ACTIVE_STATUSES:
            return False
        run.status, run.finished_at, run.error = TrainingRun.Status.FAILED, timezone.now(), error[-10000:]
        run.save(update_fields=["status", "finished_at", "error"])
    return True


def run_cancel(*, run: TrainingRun) -> bool:
    """QUEUED/RUNNING -> CANCELLED. A running worker sees it at its next report and stops without a version."""
    with transaction.atomic():
        locked = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if locked.status not in TrainingRun.ACTIVE_STATUSES:
            return False
        locked.status, locked.finished_at = TrainingRun.Status.CANCELLED, timezone.now()
        locked.save(update_fields=["status", "finished_at"])
    run.refresh_from_db()
    return True


def runs_reap_stale() -> list[int]:
    """Fail RUNNING runs whose heartbeat went stale and remove their half-written artifact folders;
    send again the task of QUEUED runs that no worker picked up (runs_resend_lost). Returns the ids
    of the runs it failed.

    With acks_late and reject_on_worker_lost off, Celery acknowledges a task whose worker process was
    SIGKILLed (OOM killer, node loss), so without this the run would stay RUNNING and block its
    project's single flight forever.
    """
    return jobs_reap_stale(_RUN_REAPER)


def runs_resend_lost(*, now: datetime | None = None) -> list[int]:
    """A QUEUED run holds its project's single flight, and a broker that keeps nothing on disk (Redis
    by default) loses queued messages when it restarts: then no worker will ever start the run.
    Send its task again (a duplicate is harmless: run_start takes a QUEUED run once, under a row
    lock); fail it with the reason once it has waited PAIRWISE_QUEUED_MAX_AGE. Returns the failed ids."""
    return jobs_resend_lost(_RUN_REAPER, now=now)


def _partial_artifacts_remove(run: TrainingRun) -> None:
    """Remove the `.tmp-*` folders atomic_output_dir left beside the run's output folder."""
    output = (run.params or {}).get("output_dir")
    if not output:
        return
    output = Path(output)
    if output.parent.is_dir():
        for tmp in output.parent.glob(f".tmp-{output.name}-*"):
            shutil.rmtree(tmp, ignore_errors=True)


_RUN_REAPER = JobReaper(
    what="run", failed_status=TrainingRun.Status.FAILED, stale=runs_stale_list,
    unpicked=lambda now: runs_queued_unpicked_list(now=now), send=_run_send, cleanup=_partial_artifacts_remove,
    queue_hint=lambda run: f"a worker consuming the queue of {plan.TASK_OF_KIND[run.kind]} "
                           "(celery -A config worker -Q celery,training)",
)


def run_output_dir(*, run: TrainingRun) -> Path:
    """Where a run's artifact folder goes (written atomically by training.ml.common.atomic_output_dir)."""
    return Path(settings.PAIRWISE_MODELS_DIR) / run.project.slug / f"{run.kind}-run{run.pk}"
