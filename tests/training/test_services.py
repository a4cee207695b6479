"""Services: reward data from judgments, run state machine, single flight under real concurrency,
the reaper, the registry, and the atomic artifact move (in process; the worker tests are in test_tasks)."""
from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from labeling.models import ComparisonTask, Demonstration, Judgment, Prompt, Response, TaskResponse
from tests.training.conftest import fast_params, import_preferences, separable_records
from training.models import ModelVersion, TrainingRun
from training.services import execution
from training.selectors.data import reward_data_collect
from training.services.reward import reward_model_evaluate, reward_model_train
from training.services.rounds import reward_retrain_check
from training.services.runs import RunAlreadyActive, run_cancel, run_create, run_fail, run_heartbeat, run_params_update, run_start, run_succeed, runs_reap_stale
from training.services.versions import model_version_demote, model_version_promote, model_version_register

REWARD = TrainingRun.Kind.REWARD


def _ranked_task(project, prompt_text: str, texts: list[str]):
    prompt = Prompt.objects.create(project=project, external_id=prompt_text, text=prompt_text)
    task = ComparisonTask.objects.create(project=project, prompt=prompt)
    responses = [Response.objects.create(prompt=prompt, text=t, source="test") for t in texts]
    for i, r in enumerate(responses):
        TaskResponse.objects.create(task=task, response=r, position=i)
    return task, responses


def _judge(project, task, ranking, key, **fields):
    return Judgment.objects.create(project=project, task=task, ranking=ranking, idempotency_key=key, **fields)


# ------------------------------------------------------------------------------------- reward data


@pytest.mark.django_db
def test_reward_data_groups_one_per_live_judgment_with_ties_and_supersession(project_factory):
    project = project_factory()
    task, (a, b, c, d) = _ranked_task(project, "Q?", ["a", "b", "c", "d"])
    old = _judge(project, task, [[a.pk], [b.pk], [c.pk], [d.pk]], "j-old")
    _judge(project, task, [[c.pk], [a.pk, d.pk], [b.pk]], "j-new", supersedes=old)
    _judge(project, task, [[a.pk, b.pk, c.pk, d.pk]], "j-all-tied")
    _judge(project, task, [[d.pk], [a.pk], [b.pk], [c.pk]], "j-second-annotator")
    messages_prompt = Prompt.objects.create(project=project, external_id="chat", messages=[{"role": "user", "content": "hi"}])
    chat_task = ComparisonTask.objects.create(project=project, prompt=messages_prompt)
    x = Response.objects.create(prompt=messages_prompt, text="hello", source="t")
    y = Response.objects.create(prompt=messages_prompt, text="go away", source="t")
    TaskResponse.objects.create(task=chat_task, response=y, position=0)
    TaskResponse.objects.create(task=chat_task, response=x, position=1)
    last = _judge(project, chat_task, [[x.pk], [y.pk]], "j-chat")

    data = reward_data_collect(project=project)

    assert data.groups == [
        {"prompt": "Q?", "responses": ["a", "b", "c", "d"], "ranking": [[2], [0, 3], [1]]},
        {"prompt": "Q?", "responses": ["a", "b", "c", "d"], "ranking": [[3], [0], [1], [2]]},
        {"prompt": "\n\nHuman: hi\n\nAssistant:", "responses": ["go away", "hello"], "ranking": [[1], [0]]},
    ]
    assert data.judgments == 4 and data.skipped == 1  # the superseded one is not a live judgment at all
    assert data.until_judgment_id == last.pk and len(data.sha256) == 64
    assert data.reference_texts is None
    Demonstration.objects.create(project=project, prompt=messages_prompt, text="hello there")
    assert reward_data_collect(project=project).reference_texts == [("\n\nHuman: hi\n\nAssistant:", "hello there")]


# ---------------------------------------------------------------------------------- state machine


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


# ------------------------------------------------------------------------------------------ reaper


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


# ---------------------------------------------------------------------------------------- registry


@pytest.mark.django_db
def test_register_refuses_missing_or_temp_folders_and_promotion_is_one_per_kind(project_factory, tmp_path):
    project = project_factory()
    with pytest.raises(ValidationError):
        model_version_register(project=project, kind="reward", name="x", base="b", artifact_path=tmp_path / "nope")
    half = tmp_path / ".tmp-reward-run1-xyz"
    half.mkdir()
    with pytest.raises(ValidationError):
        model_version_register(project=project, kind="reward", name="x", base="b", artifact_path=half)
    folders = [tmp_path / n for n in ("v1", "v2", "p1")]
    [f.mkdir() for f in folders]
    v1 = model_version_register(project=project, kind="reward", name="v1", base="b", artifact_path=folders[0], promoted=True)
    v2 = model_version_register(project=project, kind="reward", name="v2", base="b", artifact_path=folders[1])
    p1 = model_version_register(project=project, kind="policy", name="p1", base="b", artifact_path=folders[2], promoted=True)
    model_version_promote(version=v2)
    promoted = set(ModelVersion.objects.filter(promoted=True).values_list("name", flat=True))
    assert promoted == {"v2", "p1"}
    model_version_demote(version=v2)
    assert not ModelVersion.objects.filter(project=project, kind="reward", promoted=True).exists()
    v1.refresh_from_db()
    p1.refresh_from_db()
    assert not v1.promoted and p1.promoted


# ------------------------------------------------------------------------------- training, in process


@pytest.mark.django_db(transaction=True)
def test_reward_model_train_in_process_registers_a_complete_version(project_factory, tiny_reward_base, models_dir):
    project = project_factory()
    import_preferences(project, separable_records(24))
    run = run_create(project=project, kind=REWARD, params=fast_params(tiny_reward_base, epochs=8))
    seen_during = []

    def echo(fraction, metrics):
        out = models_dir / project.slug / f"reward-run{run.pk}"
        seen_during.append((out.exists(), bool(list(out.parent.glob(f".tmp-{out.name}-*")))))

    version = reward_model_train(run_id=run.pk, echo=echo)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert version == run.result_version and version.promoted
    # While training, only the temp folder exists; the final folder appears complete, at the end.
    assert seen_during and all(s == (False, True) for s in seen_during[:-1])
    files = {p.name for p in Path(version.artifact_path).iterdir()}
    assert {"reward_head.safetensors", "reward_config.json", "metrics.json", "config.json"} <= files
    assert version.metrics["final_train_loss"] < version.metrics["history"][0]["loss"]
    assert version.config["data_until_judgment_id"] == run.params["data_until_judgment_id"]
    result = reward_model_evaluate(version=version, records=separable_records(24))
    assert result["pairs"] == 24 and result["accuracy"] >= 0.9 and result["mean_margin"] > 0


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
def test_reward_model_train_without_comparisons_fails_cleanly(project_factory, tiny_reward_base):
    project = project_factory()
    run = run_create(project=project, kind=REWARD, params=fast_params(tiny_reward_base))
    assert reward_model_train(run_id=run.pk) is None
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and "no judgments" in run.error


# ------------------------------------------------------------------------------- scheduled retrain


@pytest.mark.django_db
def test_retrain_check_counts_new_judgments_since_the_last_succeeded_run(project_factory, settings):
    settings.PAIRWISE_HEARTBEAT_STALE = timedelta(seconds=60)
    project = project_factory(retrain_min_judgments=5)
    import_preferences(project, separable_records(4))
    assert reward_retrain_check(project_id=project.pk) is None
    import_preferences(project, [dict(r, id="n" + r["id"], prompt="n " + r["prompt"]) for r in separable_records(1)])
    run = reward_retrain_check(project_id=project.pk)
    assert run is not None and run.status == TrainingRun.Status.QUEUED and run.params == {"trigger": "schedule"}
    assert reward_retrain_check(project_id=project.pk) is None  # single flight
    # It fails: no retry until PAIRWISE_RETRY_AFTER has passed.
    run_fail(run_id=run.pk, error="x")
    assert reward_retrain_check(project_id=project.pk) is None
    TrainingRun.objects.filter(pk=run.pk).update(finished_at=timezone.now() - timedelta(hours=1))
    again = reward_retrain_check(project_id=project.pk)
    assert again is not None
    # It succeeds having trained on every judgment so far: nothing new, nothing queued.
    run_start(run_id=again.pk)
    run_params_update(run_id=again.pk, data_until_judgment_id=max(Judgment.objects.values_list("pk", flat=True)))
    run_succeed(run_id=again.pk)
    assert reward_retrain_check(project_id=project.pk) is None
