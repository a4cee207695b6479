"""Thin Celery tasks: ids in, one service call, nothing else. Each shares its service's name.

Training tasks route to the `training` queue (settings.CELERY_TASK_ROUTES), so GPU workers can take
them. The light housekeeping tasks pin `queue="celery"`, so the reaper is never stuck behind a
long training run on a one-slot training worker.
"""
from __future__ import annotations

from celery import shared_task
from django.conf import settings

from training.services import candidates, evaluation, policy, reward, rounds, runs

TRAIN_SOFT_LIMIT_S = int(getattr(settings, "PAIRWISE_TRAIN_SOFT_TIME_LIMIT_S", 6 * 3600))
TRAIN_HARD_LIMIT_S = TRAIN_SOFT_LIMIT_S + 300


def _worker(task) -> str:
    import os

    return f"{task.request.hostname or 'local'} pid={os.getpid()}"


@shared_task(
    bind=True, name="training.tasks.reward_model_train", acks_late=True, ignore_result=True,
    soft_time_limit=TRAIN_SOFT_LIMIT_S, time_limit=TRAIN_HARD_LIMIT_S,
)
def reward_model_train(self, *, run_id: int) -> int | None:
    version = reward.reward_model_train(run_id=run_id, worker=_worker(self))
    return version.pk if version else None


@shared_task(
    bind=True, name="training.tasks.candidates_generate", acks_late=True, ignore_result=True,
    soft_time_limit=TRAIN_SOFT_LIMIT_S, time_limit=TRAIN_HARD_LIMIT_S,
)
def candidates_generate(self, *, run_id: int) -> dict | None:
    return candidates.candidates_generate(run_id=run_id, worker=_worker(self))


@shared_task(
    bind=True, name="training.tasks.policy_train", acks_late=True, ignore_result=True,
    soft_time_limit=TRAIN_SOFT_LIMIT_S, time_limit=TRAIN_HARD_LIMIT_S,
)
def policy_train(self, *, run_id: int) -> int | None:
    version = policy.policy_train(run_id=run_id, worker=_worker(self))
    return version.pk if version else None


@shared_task(
    bind=True, name="training.tasks.policy_evaluate", acks_late=True, ignore_result=True,
    soft_time_limit=TRAIN_SOFT_LIMIT_S, time_limit=TRAIN_HARD_LIMIT_S,
)
def policy_evaluate(self, *, run_id: int) -> dict | None:
    result = evaluation.policy_evaluate(run_id=run_id, worker=_worker(self))
    return {k: v for k, v in result.items() if k != "samples"} if result else None


@shared_task(name="training.tasks.runs_reap_stale", queue="celery", acks_late=True, ignore_result=True,
             soft_time_limit=60, time_limit=90)
def runs_reap_stale() -> list[int]:
    return runs.runs_reap_stale()


@shared_task(name="training.tasks.reward_retrain_check", queue="celery", acks_late=True, ignore_result=True,
             soft_time_limit=60, time_limit=90)
def reward_retrain_check(*, project_id: int, **pipeline_options) -> int | None:
    """The per-project training round check; its schedule's kwargs may carry pipeline options."""
    run = rounds.reward_retrain_check(project_id=project_id, **pipeline_options)
    return run.pk if run else None
