"""manage.py train_reward_model / evaluate_reward_model / setup_schedules / reap_runs."""
from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from labeling.models import ExportJob, ImportJob
from tests.training.conftest import FAST_CONFIG, import_preferences, requestable, separable_records, write_pairs_gz
from training.models import ModelVersion, TrainingRun
from training.services.runs import run_create, run_start
from training.services.schedules import (
    EXPORT_REAPER_SCHEDULE_NAME, LEASE_SWEEP_SCHEDULE_NAME, REAPER_SCHEDULE_NAME, RETRAIN_SCHEDULE_PREFIX,
)


def _tiny_base(folder) -> ModelVersion:
    from training.services.versions import model_version_register

    return model_version_register(project=None, kind=ModelVersion.Kind.REWARD, name="tiny-base", base=str(folder),
                                  artifact_path=folder, config={"role": "base"})


def _call(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db(transaction=True)
def test_train_sync_prints_the_version_id_last_and_evaluate_prints_json(project_factory, tiny_reward_base, models_dir, tmp_path):
    project = project_factory()
    import_preferences(project, separable_records(24))
    # The backbone is named as an installed shared base (a path is the operator's: install_base_models).
    _tiny_base(tiny_reward_base)
    out, err = _call("train_reward_model", "--project", project.slug, "--base", "tiny-base", "--sync",
                     "--config", json.dumps(requestable({"config": {**FAST_CONFIG, "epochs": 8}})["config"]))
    version = ModelVersion.objects.get(project=project)
    assert out.strip().splitlines()[-1] == str(version.pk)
    assert "100.0%" in err and "[" in err  # the progress bar went to stderr
    assert TrainingRun.objects.get(project=project).status == TrainingRun.Status.SUCCEEDED

    data = write_pairs_gz(tmp_path / "pairs.jsonl.gz", separable_records(10))
    out, _ = _call("evaluate_reward_model", "--version", str(version.pk), "--data", str(data))
    result = json.loads(out)
    assert set(result) == {"pairs", "accuracy", "ci95", "mean_margin", "log_loss", "length_baseline", "by_length", "trained_prompts",
                           "length_margin_corr", "accuracy_shorter_chosen", "pairs_shorter_chosen",
                           "accuracy_longer_chosen", "pairs_longer_chosen"}
    assert result["pairs"] == 10 and result["accuracy"] >= 0.9
    assert 0 < result["trained_prompts"] < 10  # the same prompts it trained on, those on the train side
    assert "evaluations" not in ModelVersion.objects.get(pk=version.pk).metrics  # kept only with --record

    with pytest.raises(CommandError):
        _call("evaluate_reward_model", "--version", "999999", "--data", str(data))


@pytest.mark.django_db
def test_train_queues_by_default_and_refuses_a_second_live_run(project_factory, django_capture_on_commit_callbacks, monkeypatch):
    sent = []
    from training import tasks

    monkeypatch.setattr(tasks.reward_model_train, "delay", lambda **kw: sent.append(kw))
    project = project_factory()
    with django_capture_on_commit_callbacks(execute=True):
        out, _ = _call("train_reward_model", "--project", project.slug)
    run = TrainingRun.objects.get(project=project)
    assert out.strip() == f"queued reward run {run.pk}" and sent == [{"run_id": run.pk}]
    with pytest.raises(CommandError, match="already queued"):
        _call("train_reward_model", "--project", project.slug)
    with pytest.raises(CommandError, match="no project"):
        _call("train_reward_model", "--project", "nope")
    with pytest.raises(CommandError, match="No training snapshot 999999 of a project you oversee"):
        _call("train_reward_model", "--project", project.slug, "--mix-snapshot", "999999")
    assert TrainingRun.objects.filter(project=project).count() == 1


@pytest.mark.django_db
def test_sync_run_that_fails_exits_with_an_error(project_factory, tiny_reward_base):
    project = project_factory()  # no judgments
    with pytest.raises(CommandError, match="failed"):
        _call("train_reward_model", "--project", project.slug, "--base", str(_tiny_base(tiny_reward_base).pk), "--sync")


@pytest.mark.django_db
def test_setup_schedules_is_idempotent_and_keeps_admin_edits(project_factory):
    a, b = project_factory(), project_factory()
    out, _ = _call("setup_schedules")
    assert "4 created, 2 already there" in out  # the projects' own were made with them
    names = set(PeriodicTask.objects.values_list("name", flat=True))
    sweep = PeriodicTask.objects.get(name=LEASE_SWEEP_SCHEDULE_NAME)
    assert sweep.task == "labeling.tasks.assignments_expire_sweep" and sweep.queue == "celery"
    exports_reaper = PeriodicTask.objects.get(name=EXPORT_REAPER_SCHEDULE_NAME)
    assert exports_reaper.task == "labeling.tasks.export_jobs_reap_stale" and exports_reaper.interval.every == 1
    assert exports_reaper.queue == "celery"
    assert {REAPER_SCHEDULE_NAME, RETRAIN_SCHEDULE_PREFIX + a.slug, RETRAIN_SCHEDULE_PREFIX + b.slug} <= names
    reaper = PeriodicTask.objects.get(name=REAPER_SCHEDULE_NAME)
    assert reaper.task == "training.tasks.runs_reap_stale" and reaper.interval.every == 1 and reaper.queue == "celery"
    check = PeriodicTask.objects.get(name=RETRAIN_SCHEDULE_PREFIX + a.slug)
    assert check.task == "training.tasks.reward_retrain_check" and json.loads(check.kwargs) == {"project_id": a.pk}
    assert check.interval.every == 5
    check.enabled = False  # an admin edit
    check.save()

    out, _ = _call("setup_schedules")
    assert "0 created, 6 already there" in out
    assert PeriodicTask.objects.count() == 6 and not PeriodicTask.objects.get(pk=check.pk).enabled
    b.deleted_at = timezone.now()
    b.save()
    c = project_factory()
    PeriodicTask.objects.filter(name=RETRAIN_SCHEDULE_PREFIX + c.slug).delete()  # as for a project made before schedules
    out, _ = _call("setup_schedules", "--check-minutes", "2")
    assert "1 created" in out and "1 disabled" in out
    assert PeriodicTask.objects.get(name=RETRAIN_SCHEDULE_PREFIX + c.slug).interval.every == 2
    assert not PeriodicTask.objects.get(name=RETRAIN_SCHEDULE_PREFIX + b.slug).enabled


@pytest.mark.django_db
def test_reap_runs_command(project_factory, settings):
    settings.PAIRWISE_HEARTBEAT_STALE = timedelta(seconds=30)
    run = run_create(project=project_factory(), kind=TrainingRun.Kind.REWARD)
    run_start(run_id=run.pk)
    TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    job = ExportJob.objects.create(project=run.project, format="trl", status=ExportJob.Status.RUNNING,
                                   started_at=timezone.now() - timedelta(minutes=5))
    imported = ImportJob.objects.create(project=run.project, filename="big.jsonl", status=ImportJob.Status.RUNNING,
                                        started_at=timezone.now() - timedelta(minutes=5))
    out, _ = _call("reap_runs")
    assert out.splitlines() == [f"reaped 1 run(s): {run.pk}", f"reaped 1 export job(s): {job.pk}",
                                f"reaped 1 import job(s): {imported.pk}"]
    assert TrainingRun.objects.get(pk=run.pk).status == TrainingRun.Status.FAILED
    assert ExportJob.objects.get(pk=job.pk).status == ExportJob.Status.FAILED
    assert ImportJob.objects.get(pk=imported.pk).status == ImportJob.Status.FAILED


@pytest.mark.django_db
def test_generate_candidates_queues_one_run_and_refuses_a_second(project_factory):
    project = project_factory()
    out, _ = _call("generate_candidates", "--project", project.slug, "--max-prompts", "3")
    run = TrainingRun.objects.get(project=project)
    assert out.strip() == f"queued candidates run {run.pk}"
    assert run.kind == "candidates" and run.status == "queued" and run.params["max_prompts"] == 3
    with pytest.raises(CommandError, match="already"):
        _call("generate_candidates", "--project", project.slug)


@pytest.mark.django_db
def test_train_policy_queues_a_run_with_the_config_overrides(project_factory):
    project = project_factory()
    out, _ = _call("train_policy", "--project", project.slug, "--kind", "dpo", "--config", '{"lora_r": 8, "lora_alpha": 16}')
    run = TrainingRun.objects.get(project=project)
    assert out.strip() == f"queued dpo run {run.pk}" and run.kind == "dpo"
    assert run.params["config"] == {"lora_r": 8, "lora_alpha": 16} and run.status == TrainingRun.Status.QUEUED
    with pytest.raises(CommandError, match="--config"):
        _call("train_policy", "--project", project.slug, "--kind", "dpo", "--config", "[1]")
    with pytest.raises(CommandError, match="--parent 999999"):
        _call("train_policy", "--project", project.slug, "--kind", "sft", "--parent", "999999")
