"""training.services.runs and execution: single flight, idempotent start, heartbeats, the reaper, cancel and failure."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tests.training.conftest import REWARD, fast_params, import_preferences, separable_records
from training.models import ModelVersion, TrainingRun
from training.services import execution
from training.services.reward import reward_model_train
from training.services.runs import (
    RunAlreadyActive,
    run_cancel,
    run_create,
    run_fail,
    run_heartbeat,
    run_params_update,
    run_start,
    run_succeed,
    runs_reap_stale,
)


@pytest.mark.django_db
def test_single_flight_refuses_a_second_live_run_and_frees_after_it_ends(project_factory):
    project = project_factory()
    first = run_create(project=project, kind=REWARD)
    with pytest.raises(RunAlreadyActive) as refused:
        run_create(project=project, kind=REWARD)
    assert refused.value.run == first
    other_kind = run_create(project=project, kind=TrainingRun.Kind.DPO)  # kinds are independent
    assert run_start(run_id=first.pk, worker="w") is not None
    with pytest.raises(RunAlreadyActive):
        run_create(project=project, kind=REWARD)
    assert run_fail(run_id=first.pk, error="boom")
    assert run_fail(run_id=first.pk, error="again") is False
    second = run_create(project=project, kind=REWARD)
    assert second.pk != first.pk and other_kind.status == TrainingRun.Status.QUEUED


@pytest.mark.django_db
def test_run_start_is_idempotent_and_heartbeat_stops_after_the_end(project_factory):
    run = run_create(project=project_factory(), kind=REWARD)
    started = run_start(run_id=run.pk, worker="host pid=1")
    assert started.status == TrainingRun.Status.RUNNING and started.worker == "host pid=1"
    assert run_start(run_id=run.pk, worker="dup") is None  # a redelivered message does nothing
    assert run_heartbeat(run_id=run.pk, progress=0.5, metrics=[{"step": 1, "loss": 0.7}], log_lines=["hello"])
    run.refresh_from_db()
    assert run.progress == 0.5 and run.metrics_history == [{"step": 1, "loss": 0.7}] and run.log_tail == "hello\n"
    assert run_cancel(run=run) and run.status == TrainingRun.Status.CANCELLED
    assert run_heartbeat(run_id=run.pk, progress=0.6) is False
    assert run_heartbeat(run_id=run.pk) is False
    assert run_succeed(run_id=run.pk) is None


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_and_starts_yield_exactly_one(project_factory):
    """Eight threads, eight connections, one barrier: the database lets exactly one run live, and
    exactly one of two racing workers starts it."""
    project = project_factory()
    barrier, results = threading.Barrier(8), []

    def create():
        try:
            barrier.wait()
            results.append(run_create(project=project, kind=REWARD).pk)
        except RunAlreadyActive:
            results.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=create) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    created = [r for r in results if r != "refused"]
    assert len(created) == 1 and results.count("refused") == 7
    assert TrainingRun.objects.filter(project=project, kind=REWARD).count() == 1

    starts, start_barrier = [], threading.Barrier(2)

    def start():
        try:
            start_barrier.wait()
            starts.append(run_start(run_id=created[0], worker=threading.current_thread().name))
        finally:
            connection.close()

    threads = [threading.Thread(target=start) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(s is None for s in starts) == [False, True]


@pytest.mark.django_db
def test_reaper_fails_only_stale_running_runs_and_removes_their_temp_folder(project_factory, models_dir, settings):
    settings.PAIRWISE_HEARTBEAT_STALE = timedelta(seconds=60)
    project_a, project_b, project_c = project_factory(), project_factory(), project_factory()
    stale = run_create(project=project_a, kind=REWARD)
    run_start(run_id=stale.pk)
    out = models_dir / project_a.slug / f"reward-run{stale.pk}"
    run_params_update(run_id=stale.pk, output_dir=str(out))
    tmp = out.parent / f".tmp-{out.name}-abc"
    tmp.mkdir(parents=True)
    (tmp / "model.safetensors").write_bytes(b"half")
    other_tmp = out.parent / ".tmp-reward-run999999-x"
    other_tmp.mkdir()
    TrainingRun.objects.filter(pk=stale.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=61))
    fresh = run_create(project=project_b, kind=REWARD)
    run_start(run_id=fresh.pk)
    queued = run_create(project=project_c, kind=REWARD)
    TrainingRun.objects.filter(pk=queued.pk).update(created_at=timezone.now() - timedelta(days=1))

    assert runs_reap_stale() == [stale.pk]
    stale.refresh_from_db()
    assert stale.status == TrainingRun.Status.FAILED and "Reaped" in stale.error and stale.finished_at
    assert not tmp.exists() and other_tmp.exists()  # only the reaped run's own temp folder
    assert TrainingRun.objects.get(pk=fresh.pk).status == TrainingRun.Status.RUNNING
    assert TrainingRun.objects.get(pk=queued.pk).status == TrainingRun.Status.QUEUED
    assert runs_reap_stale() == []


@pytest.mark.django_db(transaction=True)
def test_a_cancelled_run_leaves_no_version_and_no_folder(project_factory, tiny_reward_base, models_dir, monkeypatch):
    project = project_factory()
    import_preferences(project, separable_records(16))
    run = run_create(project=project, kind=REWARD, params=fast_params(tiny_reward_base, epochs=400))
    calls = []

    def cancel_midway(fraction, metrics):
        calls.append(fraction)
        if len(calls) == 3:
            run_cancel(run=TrainingRun.objects.get(pk=run.pk))

    monkeypatch.setattr(execution, "REPORT_EVERY_S", 0.0)  # report every step, so the cancel is seen at once
    assert reward_model_train(run_id=run.pk, echo=cancel_midway) is None
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED and run.result_version is None
    assert len(calls) < 50
    assert not ModelVersion.objects.exists()
    assert list((models_dir / project.slug).iterdir()) == []  # neither the final nor a temp folder


@pytest.mark.django_db(transaction=True)
def test_a_failing_run_records_the_error_and_leaves_nothing(project_factory, tmp_path, models_dir):
    project = project_factory()
    import_preferences(project, separable_records(8))
    run = run_create(project=project, kind=REWARD, params={"base": str(tmp_path / "no-such-model")})
    assert reward_model_train(run_id=run.pk) is None
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and "no-such-model" in run.error
    assert not ModelVersion.objects.exists()
    assert not [p for p in (models_dir / project.slug).glob("*")]



@pytest.mark.django_db
def test_a_queued_run_no_worker_took_is_sent_again_then_failed_with_the_reason(
    project_factory, no_broker, django_capture_on_commit_callbacks, settings,
):
    from training.services.runs import run_queue, runs_resend_lost

    settings.PAIRWISE_QUEUED_RESEND_AFTER = timedelta(minutes=10)
    settings.PAIRWISE_QUEUED_MAX_AGE = timedelta(hours=24)
    project, other = project_factory(), project_factory()
    with django_capture_on_commit_callbacks(execute=True):
        fresh = run_queue(project=project, kind=REWARD)
        lost = run_queue(project=other, kind=REWARD)
    assert [m["run_id"] for m in no_broker] == [fresh.pk, lost.pk] and fresh.sends == 1 and fresh.sent_at
    TrainingRun.objects.filter(pk=lost.pk).update(sent_at=timezone.now() - timedelta(minutes=11))

    with django_capture_on_commit_callbacks(execute=True):
        assert runs_resend_lost() == []
    lost.refresh_from_db()
    assert [m["run_id"] for m in no_broker][2:] == [lost.pk]  # the fresh one is left alone
    assert lost.status == TrainingRun.Status.QUEUED and lost.sends == 2
    assert timezone.now() - lost.sent_at < timedelta(minutes=1)

    later = timezone.now() + timedelta(hours=25)
    with django_capture_on_commit_callbacks(execute=True):
        assert sorted(runs_resend_lost(now=later)) == sorted([fresh.pk, lost.pk])
    lost.refresh_from_db()
    assert lost.status == TrainingRun.Status.FAILED and "No worker started this run" in lost.error
    assert "2 task messages sent" in lost.error and len(no_broker) == 3  # failing sends nothing
