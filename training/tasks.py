"""Thin Celery tasks: ids in, one service call, nothing else. Each shares its service's name.

Training tasks route to the `training` queue (settings.CELERY_TASK_ROUTES), so GPU workers can take
them. The light housekeeping tasks pin `queue="celery"`, so the reaper is never stuck behind a
long training run on a one-slot training worker. Services send these by name
(training.plan.TASK_OF_KIND), so nothing imports this module but Celery.
"""
from __future__ import annotations

import os

from celery import shared_task
from django.conf import settings

from training.services import acquisition, candidates, evaluation, machine_annotators, policy, reward, rounds, runs

TRAIN_SOFT_LIMIT_S = int(getattr(settings, "PAIRWISE_TRAIN_SOFT_TIME_LIMIT_S", 6 * 3600))
TRAIN_HARD_LIMIT_S = TRAIN_SOFT_LIMIT_S + 300


def run_task(name: str):
    """A run task: late acknowledgement (a worker lost mid-task does not ack it; the run's row lock
    makes a redelivery a no-op), the training time limits, and no result backend."""
    return shared_task(bind=True, name=name, acks_late=True, ignore_result=True,
                       soft_time_limit=TRAIN_SOFT_LIMIT_S, time_limit=TRAIN_HARD_LIMIT_S)


def housekeeping_task(name: str):
    """A short periodic task on the default queue."""
    return shared_task(name=name, queue="celery", acks_late=True, ignore_result=True, soft_time_limit=60, time_limit=90)


def _worker(task) -> str:
    return f"{task.request.hostname or 'local'} pid={os.getpid()}"


@run_task("training.tasks.reward_model_train")
def reward_model_train(self, *, run_id: int) -> int | None:
    version = reward.reward_model_train(run_id=run_id, worker=_worker(self))
    return version.pk if version else None


@run_task("training.tasks.candidates_generate")
def candidates_generate(self, *, run_id: int) -> dict | None:
    return candidates.candidates_generate(run_id=run_id, worker=_worker(self))


@run_task("training.tasks.policy_train")
def policy_train(self, *, run_id: int) -> int | None:
    version = policy.policy_train(run_id=run_id, worker=_worker(self))
    return version.pk if version else None


@run_task("training.tasks.policy_evaluate")
def policy_evaluate(self, *, run_id: int) -> dict | None:
    result = evaluation.policy_evaluate(run_id=run_id, worker=_worker(self))
    return {k: v for k, v in result.items() if k != "samples"} if result else None


@housekeeping_task("training.tasks.runs_reap_stale")
def runs_reap_stale() -> list[int]:
    return runs.runs_reap_stale()


@housekeeping_task("training.tasks.reward_retrain_check")
def reward_retrain_check(*, project_id: int, **pipeline_options) -> int | None:
    """The per-project training round check; its schedule's kwargs may carry pipeline options."""
    run = rounds.reward_retrain_check(project_id=project_id, **pipeline_options)
    return run.pk if run else None


# A batch of machine judgments is a few endpoint calls per task, bounded by the client's timeouts and
# retries; the service re-sends the task for the next batch, so one message never runs for long.
@shared_task(name="training.tasks.machine_annotator_work", queue="celery", acks_late=True, ignore_result=True,
             soft_time_limit=machine_annotators.WORK_SOFT_TIME_LIMIT_S, time_limit=machine_annotators.WORK_TIME_LIMIT_S)
def machine_annotator_work(*, machine_id: int, max_tasks: int = machine_annotators.WORK_BATCH) -> dict:
    return machine_annotators.machine_annotator_work(machine_id=machine_id, max_tasks=max_tasks)


# Scoring a project's open tasks is forward passes of the promoted reward model (minutes at most on a
# CPU for a large queue), so it goes where reward runs go; a redelivery just scores again.
@shared_task(name="training.tasks.acquisition_scores_update", acks_late=True, ignore_result=True,
             soft_time_limit=3600, time_limit=3660)
def acquisition_scores_update(*, project_id: int) -> dict:
    from labeling.models import Project

    return acquisition.acquisition_scores_update(project=Project.objects.get(pk=project_id))
