"""The Celery tasks end to end, on a REAL worker subprocess and the test database (not eager mode)."""
from __future__ import annotations

import os
import signal
from datetime import timedelta

import psutil
import pytest
from django.utils import timezone

from tests.training.conftest import fast_params, import_preferences, separable_records, wait_for
from training import tasks
from training.models import ModelVersion, TrainingRun
from training.services.rounds import reward_retrain_check
from training.services.runs import RunAlreadyActive, run_create, run_queue
from training.services.versions import model_version_register

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _run(run_id: int) -> TrainingRun:
    return TrainingRun.objects.get(pk=run_id)


def _final(run_id: int):
    run = _run(run_id)
    return run if run.status not in TrainingRun.ACTIVE_STATUSES else None


def test_reward_task_end_to_end_on_a_real_worker(celery_worker, project_factory, tiny_reward_base, models_dir):
    project = project_factory()
    import_preferences(project, separable_records(24))

    run = run_queue(project=project, kind=TrainingRun.Kind.REWARD, params=fast_params(tiny_reward_base))
    done = wait_for(lambda: _final(run.pk), timeout=180, worker=celery_worker, what="the reward run to finish")

    assert done.status == TrainingRun.Status.SUCCEEDED, done.error
    assert done.progress == 1.0 and done.started_at and done.finished_at and done.heartbeat_at
    # The worker that ran it is the prefork child, not this test process.
    assert f"pid={os.getpid()}" not in done.worker and "pid=" in done.worker
    assert done.metrics_history and {"step", "loss", "accuracy"} <= set(done.metrics_history[0])
    assert done.params["groups"] == 24 and done.params["data_until_judgment_id"] > 0
    version = done.result_version
    assert version is not None and version.kind == ModelVersion.Kind.REWARD and version.project == project
    # 24 prompts hold out fewer groups than the default minimum: a candidate, and it says so.
    assert not version.promoted and "held-out group" in version.metrics["promotion"]["reason"]
    assert os.path.isfile(os.path.join(version.artifact_path, "pairwise_config.json"))
    assert version.artifact_path.startswith(str(models_dir))
    assert version.metrics["val_accuracy"] is not None and "history" in version.metrics
    # No temp folder left beside it.
    assert not [p for p in (models_dir / project.slug).iterdir() if p.name.startswith(".tmp-")]

    # A second delivery of the same message (acks_late redelivery) is a no-op.
    tasks.reward_model_train.delay(run_id=run.pk)
    follow = run_queue(project=project, kind=TrainingRun.Kind.REWARD, params=fast_params(tiny_reward_base))
    wait_for(lambda: _final(follow.pk), timeout=180, worker=celery_worker, what="the follow-up run")
    assert ModelVersion.objects.filter(project=project).count() == 2
    assert _run(run.pk).result_version_id == version.pk


def test_sigkilled_run_is_reaped_and_the_next_run_succeeds(celery_worker_factory, project_factory, tiny_reward_base,
                                                          models_dir, settings):
    stale_s = 3
    settings.PAIRWISE_HEARTBEAT_STALE = __import__("datetime").timedelta(seconds=stale_s)
    worker = celery_worker_factory(PAIRWISE_HEARTBEAT_STALE_S=stale_s)
    project = project_factory()
    import_preferences(project, separable_records(24))

    # Long enough that it is surely mid-training when killed.
    doomed = run_queue(project=project, kind=TrainingRun.Kind.REWARD,
                                params=fast_params(tiny_reward_base, epochs=5000))
    wait_for(lambda: _run(doomed.pk).progress > 0, timeout=120, worker=worker, what="training progress")
    running = _run(doomed.pk)
    assert running.status == TrainingRun.Status.RUNNING
    pid = int(running.worker.rsplit("pid=", 1)[1])
    assert pid != worker.proc.pid and psutil.Process(pid).ppid() == worker.proc.pid  # the pool child

    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, timeout=10)
    assert worker.alive()

    # Celery acked the lost task; nothing but the reaper will ever move this run. Single flight still holds.
    with pytest.raises(RunAlreadyActive):
        run_create(project=project, kind=TrainingRun.Kind.REWARD)
    output_dir = models_dir / project.slug / f"reward-run{doomed.pk}"
    assert not output_dir.exists()
    assert list((models_dir / project.slug).glob(f".tmp-{output_dir.name}-*")), "the half-written temp folder"

    # The reaper runs as a task on the same worker.
    def reaped():
        tasks.runs_reap_stale.delay()
        return _try(lambda: wait_for(lambda: _final(doomed.pk), timeout=5, what="the reaper"))

    wait_for(reaped, timeout=60, interval=0, worker=worker, what="the reaper to fail the run")
    dead = _run(doomed.pk)
    assert dead.status == TrainingRun.Status.FAILED and dead.error.startswith("Reaped")
    assert dead.result_version is None
    assert not ModelVersion.objects.filter(project=project).exists()
    assert not output_dir.exists()
    assert not list((models_dir / project.slug).glob(".tmp-*")), "the reaper removes the half-written folder"

    nxt = run_queue(project=project, kind=TrainingRun.Kind.REWARD, params=fast_params(tiny_reward_base))
    done = wait_for(lambda: _final(nxt.pk), timeout=180, worker=worker, what="the next run")
    assert done.status == TrainingRun.Status.SUCCEEDED, done.error
    assert list(ModelVersion.objects.filter(project=project)) == [done.result_version]


def _try(fn):
    try:
        return fn()
    except AssertionError:
        return None


def test_runs_of_one_project_never_overlap_on_the_worker(celery_worker, project_factory, tiny_reward_base):
    project = project_factory()
    import_preferences(project, separable_records(16))
    ids = []
    for _ in range(3):
        run = run_queue(project=project, kind=TrainingRun.Kind.REWARD, params=fast_params(tiny_reward_base))
        with pytest.raises(RunAlreadyActive):
            run_queue(project=project, kind=TrainingRun.Kind.REWARD, params=fast_params(tiny_reward_base))
        wait_for(lambda: _final(run.pk), timeout=180, worker=celery_worker, what="run")
        ids.append(run.pk)
    runs = sorted(TrainingRun.objects.filter(pk__in=ids), key=lambda r: r.started_at)
    assert all(r.status == TrainingRun.Status.SUCCEEDED for r in runs)
    for earlier, later in zip(runs, runs[1:]):
        assert earlier.finished_at <= later.started_at
    assert TrainingRun.objects.filter(project=project).count() == 3  # the refused ones never existed


def test_retrain_check_task_queues_a_run_the_worker_trains(celery_worker, project_factory, tiny_reward_base, settings):
    project = project_factory(retrain_min_judgments=10)
    import_preferences(project, separable_records(9), count_for_retrain=True)
    assert reward_retrain_check(project_id=project.pk) is None  # 9 < 10
    import_preferences(project, [dict(r, id=f"x{r['id']}", prompt="more " + r["prompt"]) for r in separable_records(3)],
                       count_for_retrain=True)
    # The scheduled run uses the registered base; here that is the tiny model, registered as the reward base.
    model_version_register(project=None, kind=ModelVersion.Kind.REWARD, name="tiny-base",
                                    base=str(tiny_reward_base), artifact_path=tiny_reward_base, config={"role": "base"})
    tasks.reward_retrain_check.delay(project_id=project.pk)
    run = wait_for(lambda: TrainingRun.objects.filter(project=project).first(), timeout=30, worker=celery_worker,
                   what="a scheduled run")
    assert run.params["trigger"] == "schedule"
    done = wait_for(lambda: _final(run.pk), timeout=300, worker=celery_worker, what="the scheduled run")
    assert done.status == TrainingRun.Status.SUCCEEDED, done.error
    assert done.params["base"] == str(tiny_reward_base)
    assert reward_retrain_check(project_id=project.pk) is None  # nothing new since


def test_a_run_whose_message_a_broker_restart_lost_is_sent_again_and_trains(
    celery_worker_factory, private_redis, project_factory, tiny_reward_base,
):
    from config.celery import app

    project = project_factory()
    import_preferences(project, separable_records(12))
    run = run_create(project=project, kind=TrainingRun.Kind.REWARD, params=fast_params(tiny_reward_base, epochs=1))
    TrainingRun.objects.filter(pk=run.pk).update(sent_at=timezone.now() - timedelta(hours=1), sends=1)
    with app.connection_for_write(private_redis.url) as connection:
        app.send_task(tasks.reward_model_train.name, kwargs={"run_id": run.pk}, connection=connection, queue="training")
    assert private_redis.queued("training") == 1
    private_redis.restart()  # Redis keeps nothing on disk: the queued message is gone
    assert private_redis.queued("training") == 0

    worker = celery_worker_factory(CELERY_BROKER_URL=private_redis.url, PAIRWISE_QUEUED_RESEND_AFTER_S=1)
    assert _run(run.pk).status == TrainingRun.Status.QUEUED  # nothing will ever start it by itself
    with app.connection_for_write(private_redis.url) as connection:  # what beat does every minute
        app.send_task(tasks.runs_reap_stale.name, connection=connection, queue="celery")
    done = wait_for(lambda: _final(run.pk), timeout=180, worker=worker, what="the resent run to finish")

    assert done.status == TrainingRun.Status.SUCCEEDED, done.error
    assert done.sends == 2 and done.result_version is not None
    # Its project's single flight is free again: the next run can start.
    assert run_create(project=project, kind=TrainingRun.Kind.REWARD).status == TrainingRun.Status.QUEUED
