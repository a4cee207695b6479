"""Writes for the training registry and runs. Every state change of a TrainingRun or ModelVersion,
and every task enqueue, happens here.

A run's life: run_queue (QUEUED, task sent after commit) -> run_start (RUNNING, under a row lock;
a duplicate delivery finds it RUNNING and returns) -> heartbeats while it trains -> one of
run_succeed (the ModelVersion is registered in the same transaction), run_fail, run_cancel, or
runs_reap_stale (the worker died and nothing else will notice). Single flight is the database's
partial unique constraint on (project, kind) over QUEUED/RUNNING runs, not a check in Python.

Heavy imports (torch, transformers, training.ml.*) are done inside functions, so web and beat
processes never load them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from labeling.models import Demonstration, Project, TaskResponse
from training.models import ModelVersion, TrainingRun
from training.selectors import (
    judgments_for_training,
    model_version_promoted_get,
    reward_new_judgments_count,
    run_active_get,
    runs_stale_list,
)

logger = logging.getLogger(__name__)

LOG_TAIL_CHARS = 8000
MAX_HISTORY_POINTS = 2000
REPORT_EVERY_S = 2.0


class RunAlreadyActive(ValidationError):
    """Single flight: a QUEUED or RUNNING run of this kind already exists for the project."""

    def __init__(self, run: TrainingRun):
        self.run = run
        super().__init__(f"A {run.kind} run is already {run.status} for this project (run {run.pk}).", code="run_active")


class RunAborted(Exception):
    """The run stopped being RUNNING under the worker's feet (cancelled, or reaped as stale)."""


# ---------------------------------------------------------------------------------------- runs


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


def _task_for(kind: str):
    from training import tasks

    return {
        TrainingRun.Kind.REWARD: tasks.reward_model_train,
        TrainingRun.Kind.SFT: tasks.policy_train,
        TrainingRun.Kind.DPO: tasks.policy_train,
        TrainingRun.Kind.PPO: tasks.policy_train,
        TrainingRun.Kind.EVALUATE: tasks.policy_evaluate,
        TrainingRun.Kind.CANDIDATES: tasks.candidates_generate,
    }[kind]


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
        _task_for(kind).delay_on_commit(run_id=run.pk)
    return run


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


def run_execute(*, run_id: int, worker: str, what: str, body: Callable[[TrainingRun], Any]) -> Any:
    """The frame of every run task: QUEUED -> RUNNING (or return None on a redelivery), heartbeats
    while body runs, and errors recorded on the run, never raised (there is nothing to retry)."""
    run = run_start(run_id=run_id, worker=worker)
    if run is None:
        logger.info("run %s is not queued; nothing to do", run_id)
        return None
    try:
        with run_heartbeats(run_id=run.pk):
            return body(run)
    except RunAborted as exc:
        logger.warning("%s", exc)
        return None
    except BaseException as exc:
        run_fail(run_id=run.pk, error=f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}")
        logger.exception("%s run %s failed", what, run.pk)
        if not isinstance(exc, Exception):
            raise
        return None


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
            history = list(run.metrics_history or []) + [_jsonable(m) for m in metrics]
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
        run.params = {**(run.params or {}), **_jsonable(params)}
        run.save(update_fields=["params"])


def run_succeed(
    *, run_id: int, version_fields: dict[str, Any] | None = None,
    inside: Callable[[TrainingRun], None] | None = None, promote: bool = False,
) -> tuple[TrainingRun, ModelVersion | None] | None:
    """RUNNING -> SUCCEEDED, registering (and with promote, promoting) the produced version in the
    same transaction. A run of a round (pipeline_id) queues the round's next step in it too
    (training.services_policy.pipeline_advance; the task is sent on commit).

    None when the run is no longer RUNNING (reaped or cancelled meanwhile): then nothing is registered
    and the caller removes the artifact it made.
    """
    from training.services_policy import pipeline_advance

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
    """Fail RUNNING runs whose heartbeat went stale and remove their half-written artifact folders.

    With acks_late and reject_on_worker_lost off, Celery acknowledges a task whose worker process was
    SIGKILLed (OOM killer, node loss), so without this the run would stay RUNNING and block its
    project's single flight forever.
    """
    reaped = []
    for run_id in list(runs_stale_list().values_list("pk", flat=True)):
        with transaction.atomic():
            run = runs_stale_list().select_for_update().filter(pk=run_id).first()
            if run is None:
                continue
            last = run.heartbeat_at or run.started_at
            run.status, run.finished_at = TrainingRun.Status.FAILED, timezone.now()
            run.error = (
                f"Reaped: no heartbeat since {last.isoformat() if last else 'start'} "
                f"(limit {settings.PAIRWISE_HEARTBEAT_STALE}); the worker {run.worker or ''} was killed or lost."
            )
            run.save(update_fields=["status", "finished_at", "error"])
        _partial_artifacts_remove(run)
        reaped.append(run_id)
        logger.warning("reaped stale run %s", run_id)
    return reaped


def _partial_artifacts_remove(run: TrainingRun) -> None:
    """Remove the `.tmp-*` folders atomic_output_dir left beside the run's output folder."""
    output = (run.params or {}).get("output_dir")
    if not output:
        return
    output = Path(output)
    if output.parent.is_dir():
        for tmp in output.parent.glob(f".tmp-{output.name}-*"):
            shutil.rmtree(tmp, ignore_errors=True)


# -------------------------------------------------------------------------- progress reporting


class RunReporter:
    """The trainers' progress callback `progress(fraction, metrics)`.

    Keeps every metric point, and writes progress, the points and log lines to the run at most every
    `every_s` seconds (and always at the end). Raises RunAborted when the run was cancelled or reaped,
    which unwinds the trainer through atomic_output_dir, so no artifact is left behind.
    """

    def __init__(self, *, run_id: int, span: tuple[float, float] = (0.0, 1.0), every_s: float | None = None,
                 echo: Callable[[float, dict[str, Any]], None] | None = None):
        self.run_id, self.span, self.echo = run_id, span, echo
        self.every_s = REPORT_EVERY_S if every_s is None else every_s
        self._points: list[dict[str, Any]] = []
        self._lines: list[str] = []
        self._last = 0.0
        self.fraction = 0.0

    def __call__(self, fraction: float, metrics: dict[str, Any]) -> None:
        lo, hi = self.span
        self.fraction = lo + (hi - lo) * min(1.0, max(0.0, float(fraction)))
        point = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float, str, bool)) or v is None}
        if point:
            self._points.append(point)
            if "step" in point:
                shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items())
                self._lines.append(shown)
        if self.echo:
            self.echo(self.fraction, point)
        if fraction >= 1.0 or time.monotonic() - self._last >= self.every_s:
            self.flush()

    def log(self, line: str) -> None:
        self._lines.append(line)

    def flush(self) -> None:
        points, lines = self._points, self._lines
        self._points, self._lines = [], []
        self._last = time.monotonic()
        if not run_heartbeat(run_id=self.run_id, progress=self.fraction, metrics=points, log_lines=lines):
            raise RunAborted(f"run {self.run_id} is no longer running")


class _HeartbeatThread(threading.Thread):
    """Beats while the trainer is busy in a long step, model load or evaluation. It dies with the
    process, so a SIGKILLed worker goes silent and the reaper finds it."""

    def __init__(self, run_id: int, interval: float):
        super().__init__(name=f"heartbeat-run-{run_id}", daemon=True)
        self.run_id, self.interval, self.stopped = run_id, interval, threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.interval):
                try:
                    run_heartbeat(run_id=self.run_id)
                except Exception:  # a DB blip must not kill the beat; the reaper is the backstop
                    logger.exception("heartbeat failed for run %s", self.run_id)
        finally:
            connection.close()


class run_heartbeats:
    """Context manager: a heartbeat thread for the block's duration."""

    def __init__(self, *, run_id: int):
        stale = settings.PAIRWISE_HEARTBEAT_STALE.total_seconds()
        self.thread = _HeartbeatThread(run_id, interval=min(30.0, max(0.5, stale / 4)))

    def __enter__(self):
        self.thread.start()
        return self.thread

    def __exit__(self, *exc):
        self.thread.stopped.set()
        self.thread.join(timeout=10)
        return False


# -------------------------------------------------------------------------------------- registry


def model_version_register(
    *, project: Project | None, kind: str, name: str, base: str, artifact_path: str | os.PathLike,
    config: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None, parent: ModelVersion | None = None,
    snapshot: Any = None, promoted: bool = False,
) -> ModelVersion:
    """Register a complete artifact folder. The folder must already be in place (atomic move done)."""
    path = Path(artifact_path)
    if not path.is_dir() or path.name.startswith(".tmp-"):
        raise ValidationError({"artifact_path": f"{path} is not a finished artifact folder."})
    if kind not in ModelVersion.Kind.values:
        raise ValidationError({"kind": f"Unknown kind {kind!r}."})
    with transaction.atomic():
        version = ModelVersion.objects.create(
            project=project, kind=kind, name=name[:200], base=str(base)[:1024], artifact_path=str(path.resolve()),
            config=_jsonable(config or {}), metrics=_jsonable(metrics or {}), parent=parent, snapshot=snapshot,
        )
        if promoted:
            version = model_version_promote(version=version)
    return version


def model_version_promote(*, version: ModelVersion) -> ModelVersion:
    """Make this the promoted version of its kind in its project; the previous one is demoted."""
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if version.status != ModelVersion.Status.READY:
            raise ValidationError("Only a ready version can be promoted.")
        if version.promoted:
            return version
        current = ModelVersion.objects.select_for_update().filter(
            project=version.project, kind=version.kind, promoted=True
        ).exclude(pk=version.pk)
        current.update(promoted=False)
        version.promoted = True
        version.save(update_fields=["promoted"])
    return version


def model_version_demote(*, version: ModelVersion) -> ModelVersion:
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if version.promoted:
            version.promoted = False
            version.save(update_fields=["promoted"])
    return version


# ------------------------------------------------------------------------------- reward model data


@dataclass
class RewardData:
    groups: list[dict[str, Any]] = field(default_factory=list)
    reference_texts: list[tuple[str, str]] | None = None
    judgments: int = 0
    skipped: int = 0
    until_judgment_id: int = 0
    sha256: str = ""


def _prompt_string(prompt) -> str:
    from training.ml.text import prompt_as_transcript

    return prompt_as_transcript(prompt.messages if prompt.messages else prompt.text)


def reward_data_collect(*, project: Project, until_judgment_id: int | None = None) -> RewardData:
    """One group per live judgment (InstructGPT: a judgment is one batch element), responses in slot order,
    ranking as tie groups of indices best first. Reference texts for normalisation: the demonstrations."""
    judgments = judgments_for_training(project=project)
    if until_judgment_id is not None:
        judgments = judgments.filter(pk__lte=until_judgment_id)
    judgments = list(judgments)
    task_ids = {j.task_id for j in judgments}
    slots: dict[int, list[tuple[int, str]]] = {}
    for start in range(0, len(task_ids), 5000):
        chunk = list(task_ids)[start:start + 5000]
        rows = TaskResponse.objects.filter(task_id__in=chunk).order_by("task_id", "position")
        for task_id, response_id, text in rows.values_list("task_id", "response_id", "response__text"):
            slots.setdefault(task_id, []).append((response_id, text))
    data = RewardData()
    prompts: dict[int, str] = {}
    digest = hashlib.sha256()
    for judgment in judgments:
        task_slots = slots.get(judgment.task_id, [])
        index = {rid: i for i, (rid, _) in enumerate(task_slots)}
        ranking = [[index[r] for r in tie] for tie in (judgment.ranking or []) if all(r in index for r in tie)]
        if sum(len(t) for t in ranking) != len(task_slots) or len(ranking) < 2:
            data.skipped += 1  # fully tied, or a ranking that no longer matches the task: no comparisons
            continue
        if judgment.task.prompt_id not in prompts:
            prompts[judgment.task.prompt_id] = _prompt_string(judgment.task.prompt)
        group = {"prompt": prompts[judgment.task.prompt_id], "responses": [t for _, t in task_slots], "ranking": ranking}
        data.groups.append(group)
        digest.update(json.dumps(group, sort_keys=True).encode())
        data.until_judgment_id = max(data.until_judgment_id, judgment.pk)
    data.judgments = len(judgments)
    data.sha256 = digest.hexdigest()
    demos = Demonstration.objects.filter(project=project).select_related("prompt").order_by("id")
    reference = [(_prompt_string(d.prompt), d.text) for d in demos[:4096]]
    data.reference_texts = reference or None
    return data


def _reward_base(run: TrainingRun) -> tuple[str, ModelVersion | None]:
    """The backbone: --base / params["base"], else the run's base version, else a registered reward base, else MiniLM."""
    params = run.params or {}
    if params.get("base"):
        return str(params["base"]), None
    if run.base_version is not None:
        return run.base_version.artifact_path, run.base_version
    base = ModelVersion.objects.filter(
        project__isnull=True, kind=ModelVersion.Kind.REWARD, config__role="base", status=ModelVersion.Status.READY
    ).order_by("-created_at").first()
    if base is not None:
        return base.artifact_path, base
    from training.ml.reward import default_reward_base

    return str(default_reward_base()), None


def run_output_dir(*, run: TrainingRun) -> Path:
    return Path(settings.PAIRWISE_MODELS_DIR) / run.project.slug / f"{run.kind}-run{run.pk}"


def reward_model_train(
    *, run_id: int, worker: str = "", echo: Callable[[float, dict[str, Any]], None] | None = None,
) -> ModelVersion | None:
    """The body of the `reward_model_train` task: start the run, collect groups from the judgments,
    train, then register the version and finish the run in one transaction.

    Returns the new version, or None when the run was not QUEUED (duplicate delivery), failed, or was
    cancelled/reaped meanwhile. Errors are recorded on the run, never raised (nothing to retry).
    """
    return run_execute(
        run_id=run_id, worker=worker, what="reward",
        body=lambda run: _reward_model_train(run, run_output_dir(run=run), echo),
    )


def _reward_model_train(run: TrainingRun, output_dir: Path, echo) -> ModelVersion | None:
    import dataclasses

    import torch

    from training.ml.reward import RewardConfig, train_reward_model

    reporter = RunReporter(run_id=run.pk, echo=echo)
    params = run.params or {}
    if params.get("threads"):
        torch.set_num_threads(int(params["threads"]))
    data = reward_data_collect(project=run.project)
    if not data.groups:
        raise ValueError(f"no judgments with comparisons in project {run.project.slug} ({data.skipped} skipped)")
    base, base_version = _reward_base(run)
    known = {f.name for f in dataclasses.fields(RewardConfig)}
    overrides = {k: v for k, v in (params.get("config") or {}).items() if k in known and k != "base_model"}
    config = RewardConfig(base_model=base, **overrides)
    run_params_update(
        run_id=run.pk, output_dir=str(output_dir), base=base, data_until_judgment_id=data.until_judgment_id,
        groups=len(data.groups), judgments=data.judgments, skipped_judgments=data.skipped, data_sha256=data.sha256,
        reference="demonstrations" if data.reference_texts else "chosen responses",
    )
    reporter.log(f"{len(data.groups)} groups from {data.judgments} judgments ({data.skipped} without comparisons); base {base}")
    metrics = train_reward_model(
        data.groups, config, output_dir, progress=reporter, reference_texts=data.reference_texts,
    )
    reporter.flush()
    parent = model_version_promoted_get(project=run.project, kind=ModelVersion.Kind.REWARD)
    promote = params.get("promote", "always")
    result = run_succeed(run_id=run.pk, promote=promote == "always" or (promote == "if_none" and parent is None), version_fields={
        "project": run.project, "kind": ModelVersion.Kind.REWARD, "name": f"{run.project.slug}-reward-run{run.pk}",
        "base": base, "artifact_path": output_dir, "metrics": metrics,
        "config": {**dataclasses.asdict(config), "data_sha256": data.sha256, "data_until_judgment_id": data.until_judgment_id},
        "parent": parent if parent is not None and parent.project_id == run.project_id else base_version,
    })
    if result is None:
        shutil.rmtree(output_dir, ignore_errors=True)  # reaped or cancelled while finishing: no orphan folder
        return None
    return result[1]


# ------------------------------------------------------------------------------ scheduled retrain


def reward_retrain_check(
    *, project_id: int, policy_kind: str = "", auto_promote_margin: float | None = None, promote_metric: str = "",
    step_params: dict[str, Any] | None = None,
) -> TrainingRun | None:
    """The per-project beat schedule: start a training round when >= project.retrain_min_judgments new
    judgments exist since the last succeeded reward run. The round is reward retrain -> policy retrain
    (policy_kind) -> evaluation (auto-promotion by auto_promote_margin when set) -> candidates, one
    run per step under one pipeline_id (training.services_policy). The keyword arguments come from
    the schedule's kwargs; none given means the defaults. After a failed reward run it waits
    PAIRWISE_RETRY_AFTER before trying again; it never starts a round while a round's step is live."""
    from training.services_policy import DEFAULT_PROMOTE_METRIC, pipeline_spec, pipeline_start

    project = Project.objects.filter(pk=project_id, deleted_at__isnull=True).first()
    if project is None or run_active_get(project=project, kind=TrainingRun.Kind.REWARD) is not None:
        return None
    if TrainingRun.objects.filter(project=project, pipeline_id__isnull=False, status__in=TrainingRun.ACTIVE_STATUSES).exists():
        return None
    if reward_new_judgments_count(project=project) < max(1, project.retrain_min_judgments):
        return None
    last = TrainingRun.objects.filter(project=project, kind=TrainingRun.Kind.REWARD).order_by("-created_at", "-id").first()
    retry_after = getattr(settings, "PAIRWISE_RETRY_AFTER", None) or settings.PAIRWISE_HEARTBEAT_STALE * 15
    if last is not None and last.status == TrainingRun.Status.FAILED and last.finished_at and \
            timezone.now() - last.finished_at < retry_after:
        return None
    custom = bool(policy_kind or auto_promote_margin is not None or promote_metric or step_params)
    spec = pipeline_spec(policy_kind=policy_kind, auto_promote_margin=auto_promote_margin,
                         promote_metric=promote_metric or DEFAULT_PROMOTE_METRIC, step_params=step_params)
    try:
        return pipeline_start(project=project, spec=spec, trigger="schedule", plain_params=not custom)
    except RunAlreadyActive:
        return None


# ----------------------------------------------------------------------------------- candidates


def candidate_prompts_select(*, project: Project, limit: int) -> list:
    """Prompts with no open task, those with the fewest tasks so far first."""
    from django.db.models import Count, Q

    from labeling.models import ComparisonTask, Prompt

    open_prompts = ComparisonTask.objects.filter(project=project, status=ComparisonTask.Status.OPEN).values("prompt_id")
    return list(
        Prompt.objects.filter(project=project).exclude(pk__in=open_prompts)
        .annotate(n_tasks=Count("tasks", filter=Q(tasks__is_gold=False))).order_by("n_tasks", "id")[:limit]
    )


def candidate_tasks_create(
    *, project: Project, prompts: list, samples: list[list[str]], version: ModelVersion, generation: dict[str, Any],
) -> dict[str, int]:
    """One comparison task per prompt with >= 2 distinct samples: Response rows (source = the version's
    name, with the generation parameters), the task, and its slots. Identical samples were dropped already."""
    from labeling.models import ComparisonTask, Response

    created = {"tasks": 0, "responses": 0, "prompts_skipped": 0}
    with transaction.atomic():
        for prompt, texts in zip(prompts, samples):
            texts = list(dict.fromkeys(t for t in texts if t.strip()))[: project.responses_per_task]
            if len(texts) < 2:
                created["prompts_skipped"] += 1
                continue
            rows = Response.objects.bulk_create([
                Response(prompt=prompt, text=t, source=version.name[:255], model_version=version, generation=generation)
                for t in texts
            ])
            task = ComparisonTask.objects.create(project=project, prompt=prompt)
            TaskResponse.objects.bulk_create([TaskResponse(task=task, response=r, position=i) for i, r in enumerate(rows)])
            created["tasks"] += 1
            created["responses"] += len(rows)
    return created


def candidates_generate(*, run_id: int, worker: str = "", echo: Callable | None = None) -> dict[str, int] | None:
    """The body of the `candidates_generate` task: sample K responses per prompt from the promoted
    policy (the run's base version if set), batched, and create the comparison tasks together with
    the run's success, so a failed or reaped run creates no tasks."""
    return run_execute(run_id=run_id, worker=worker, what="candidates",
                       body=lambda run: _candidates_generate(run, echo))


def _candidates_generate(run: TrainingRun, echo) -> dict[str, int] | None:
    from training.ml.generate import generate_candidates
    from training.ml.text import DEFAULT_SYSTEM_PROMPT

    project, params = run.project, run.params or {}
    if params.get("ab"):
        from training.services_policy import ab_candidates_generate

        return ab_candidates_generate(run=run, echo=echo)
    policy = run.base_version or model_version_promoted_get(project=project, kind=ModelVersion.Kind.POLICY)
    if policy is None or policy.kind != ModelVersion.Kind.POLICY:
        raise ValueError("no promoted policy version (run manage.py install_base_models)")
    prompts = candidate_prompts_select(project=project, limit=int(params.get("max_prompts", 16)))
    if not prompts:
        raise ValueError("no prompt without an open task")
    generation = {
        "temperature": project.gen_temperature, "top_p": project.gen_top_p,
        "max_new_tokens": project.gen_max_new_tokens, "k": project.responses_per_task,
        "system_prompt": project.system_prompt or DEFAULT_SYSTEM_PROMPT, "seed": run.pk, "model_version": policy.pk,
    }
    run_params_update(run_id=run.pk, policy_version=policy.pk, prompts=len(prompts), generation=generation)
    reporter = RunReporter(run_id=run.pk, span=(0.0, 0.98), echo=echo)
    samples = generate_candidates(
        policy.artifact_path, [p.messages if p.messages else p.text for p in prompts], k=project.responses_per_task,
        temperature=project.gen_temperature, top_p=project.gen_top_p, max_new_tokens=project.gen_max_new_tokens,
        system_prompt=generation["system_prompt"], batch_size=int(params.get("batch_size", 16)), seed=run.pk,
        progress=reporter, device=params.get("device", "auto"),
    )
    reporter.flush()
    created: dict[str, int] = {}

    def write(locked: TrainingRun) -> None:
        created.update(candidate_tasks_create(project=project, prompts=prompts, samples=samples, version=policy,
                                              generation=generation))
        locked.params = {**(locked.params or {}), "created": dict(created)}
        locked.save(update_fields=["params"])

    if run_succeed(run_id=run.pk, version_fields=None, inside=write) is None:
        return None
    return created


# --------------------------------------------------------------------------------- base models


def base_models_install(*, policy_dir: str | os.PathLike | None = None, reward_base_dir: str | os.PathLike | None = None) -> dict[str, ModelVersion]:
    """Idempotent: the first promoted policy (SmolLM2-135M-Instruct converted from the GGUF into
    PAIRWISE_MODELS_DIR, or any local HF causal-LM folder) and the reward base (MiniLM), as shared
    (project-less) versions. Re-running registers nothing twice and keeps a promotion made since."""
    from training.ml.reward import default_reward_base

    if policy_dir is None:
        from training.ml.convert import ensure_smollm2

        policy_dir = ensure_smollm2(Path(settings.PAIRWISE_MODELS_DIR) / "smollm2-135m-instruct")
    policy_dir = Path(policy_dir).resolve()
    reward_dir = Path(reward_base_dir or default_reward_base()).resolve()
    installed = {}
    with transaction.atomic():
        for kind, path, role in ((ModelVersion.Kind.POLICY, policy_dir, "policy-base"), (ModelVersion.Kind.REWARD, reward_dir, "base")):
            version = ModelVersion.objects.filter(project__isnull=True, kind=kind, artifact_path=str(path)).first()
            if version is None:
                version = model_version_register(project=None, kind=kind, name=path.name, base=str(path), artifact_path=path,
                                                 config={"role": role})
            installed[kind] = version
        policy = installed[ModelVersion.Kind.POLICY]
        if not ModelVersion.objects.filter(project__isnull=True, kind=ModelVersion.Kind.POLICY, promoted=True).exists():
            installed[ModelVersion.Kind.POLICY] = model_version_promote(version=policy)
    return installed


# ---------------------------------------------------------------------------------- schedules

REAPER_SCHEDULE_NAME = "pairwise: reap stale training runs"
LEASE_SWEEP_SCHEDULE_NAME = "pairwise: return expired leases to the pool"
RETRAIN_SCHEDULE_PREFIX = "pairwise: reward retrain check: "


def schedules_setup(*, check_minutes: int | None = None, pipeline_options: dict[str, Any] | None = None) -> dict[str, int]:
    """Create the django-celery-beat schedules. Idempotent, and it never overwrites a schedule that
    exists (so edits made in the admin survive); schedules of deleted projects are disabled.

    - the reaper, every minute;
    - the sweep that returns expired annotator leases to the pool, every minute;
    - per project, the training round check every `check_minutes` (PAIRWISE_RETRAIN_CHECK_MINUTES, 5):
      reward retrain -> policy retrain -> evaluation -> optional auto-promotion -> candidates
      (reward_retrain_check). pipeline_options (policy_kind, auto_promote_margin, promote_metric,
      step_params) go into the new schedules' kwargs, where an admin can edit them later.
    Both go to the `celery` queue, so they are never stuck behind a training run.
    """
    if pipeline_options:
        from training.services_policy import pipeline_spec

        pipeline_spec(**pipeline_options)  # refuse bad options before writing anything
    from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

    minutes = check_minutes or int(getattr(settings, "PAIRWISE_RETRAIN_CHECK_MINUTES", 5))
    counts = {"created": 0, "existing": 0, "disabled": 0}
    with transaction.atomic():
        every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.MINUTES)
        check_every, _ = IntervalSchedule.objects.get_or_create(every=minutes, period=IntervalSchedule.MINUTES)
        wanted = {
            REAPER_SCHEDULE_NAME: ("training.tasks.runs_reap_stale", every_minute, {}),
            LEASE_SWEEP_SCHEDULE_NAME: ("labeling.tasks.assignments_expire_sweep", every_minute, {}),
        }
        for project in Project.objects.filter(deleted_at__isnull=True).order_by("id"):
            wanted[f"{RETRAIN_SCHEDULE_PREFIX}{project.slug}"] = (
                "training.tasks.reward_retrain_check", check_every, {"project_id": project.pk, **(pipeline_options or {})},
            )
        for name, (task, interval, kwargs) in wanted.items():
            _, created = PeriodicTask.objects.get_or_create(name=name, defaults={
                "task": task, "interval": interval, "kwargs": json.dumps(kwargs), "queue": "celery",
                "description": "Created by manage.py setup_schedules; edit freely (per-project kwargs: policy_kind, "
                               "auto_promote_margin, promote_metric, step_params).",
            })
            counts["created" if created else "existing"] += 1
        stale = PeriodicTask.objects.filter(name__startswith=RETRAIN_SCHEDULE_PREFIX, enabled=True).exclude(name__in=wanted)
        counts["disabled"] = stale.update(enabled=False)
        if counts["disabled"]:
            PeriodicTasks.update_changed()  # a bulk update sends no signal; tell beat to reload
    return counts


# ---------------------------------------------------------------------------------- evaluation


def reward_model_evaluate(*, version: ModelVersion, records: list[dict[str, Any]], max_length: int | None = None) -> dict[str, Any]:
    """Accuracy of r(chosen) > r(rejected) on {prompt, chosen, rejected} records: {pairs, accuracy, mean_margin, log_loss}."""
    if version.kind != ModelVersion.Kind.REWARD or (version.config or {}).get("role") == "base":
        raise ValidationError("Only a trained reward model can be evaluated.")
    from training.ml.reward import CONFIG_FILE, evaluate_pairs, load_reward_model

    for i, record in enumerate(records):
        missing = [k for k in ("prompt", "chosen", "rejected") if not isinstance(record.get(k), str)]
        if missing:
            raise ValidationError(f"record {i + 1}: missing or non-string {', '.join(missing)}")
    if not (Path(version.artifact_path) / CONFIG_FILE).is_file():
        raise ValidationError(f"The files of version {version.pk} are gone from {version.artifact_path}.")
    model, tokenizer, config = load_reward_model(version.artifact_path)
    result = evaluate_pairs(model, tokenizer, records, max_length=max_length or config.max_length)
    return {k: result[k] for k in ("pairs", "accuracy", "mean_margin", "log_loss")}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
