"""training.services.rounds: the chained training round and its scheduled check. Task bodies run
here through the services; each enqueue is checked on commit."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from labeling.models import Judgment, Project, Response
from tests.training.conftest import (
    DPO_FAST, EVAL_FAST, fast_params, import_preferences, requestable, round_step, separable_records,
)
from training.models import ModelVersion, TrainingRun
from training.selectors.runs import pipeline_list, pipeline_spec, run_pipeline_spec
from training.services.candidates import candidates_generate
from training.services.evaluation import policy_evaluate
from training.services.policy import policy_train
from training.services.reward import reward_model_train
from training.services.rounds import pipeline_start, reward_retrain_check
from training.services.runs import run_create, run_fail, run_params_update, run_start, run_succeed
from training.services.versions import model_version_register


@pytest.mark.django_db
def test_retrain_check_counts_new_judgments_since_the_last_succeeded_run(project_factory, settings):
    settings.PAIRWISE_HEARTBEAT_STALE = timedelta(seconds=60)
    project = project_factory(retrain_min_judgments=5)
    import_preferences(project, separable_records(4), count_for_retrain=True)
    assert reward_retrain_check(project_id=project.pk) is None
    import_preferences(project, [dict(r, id="n" + r["id"], prompt="n " + r["prompt"]) for r in separable_records(1)],
                       count_for_retrain=True)
    Project.objects.filter(pk=project.pk).update(retrain_paused=True)  # paused in the project's settings
    assert reward_retrain_check(project_id=project.pk) is None and not TrainingRun.objects.exists()
    Project.objects.filter(pk=project.pk).update(retrain_paused=False)
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


@pytest.mark.django_db
def test_a_round_chains_every_step_and_promotes_by_margin(setup, tiny_reward_base, sent, django_capture_on_commit_callbacks):
    project, base = setup
    spec = pipeline_spec(policy_kind="dpo", auto_promote_margin=-1.0, step_params={
        "reward": requestable(fast_params(tiny_reward_base, epochs=2)), "dpo": requestable({"config": DPO_FAST}),
        "evaluate": requestable(EVAL_FAST), "candidates": {"max_prompts": 4},
    })
    with django_capture_on_commit_callbacks(execute=True):
        first = pipeline_start(project=project, spec=spec)
    assert sent == [("reward_model_train", first.pk)] and first.pipeline_id
    assert pipeline_list(project=project)[0]["status"] == "running"
    assert [s["status"] for s in pipeline_list(project=project)[0]["steps"]] == ["queued", "pending", "pending", "pending"]

    with django_capture_on_commit_callbacks(execute=True):
        rm = reward_model_train(run_id=first.pk)
    dpo = round_step(first.pipeline_id, "dpo")
    assert rm.promoted and sent[-1] == ("policy_train", dpo.pk) and dpo.params["trigger"] == "pipeline"
    assert dpo.params["config"] == requestable({"config": DPO_FAST})["config"] and dpo.base_version is None

    with django_capture_on_commit_callbacks(execute=True):
        version = policy_train(run_id=dpo.pk)
    evaluation = round_step(first.pipeline_id, "evaluate")
    assert sent[-1] == ("policy_evaluate", evaluation.pk) and evaluation.base_version == version
    assert evaluation.params["auto_promote_margin"] == -1.0 and version.parent == base and not version.promoted
    middle = pipeline_list(project=project)[0]
    assert middle["status"] == "running" and middle["progress"] == pytest.approx(0.5)

    with django_capture_on_commit_callbacks(execute=True):
        policy_evaluate(run_id=evaluation.pk)
    version.refresh_from_db()
    assert version.promoted and "win_rate_vs_parent" in version.metrics["evaluation"]
    candidates = round_step(first.pipeline_id, "candidates")
    assert sent[-1] == ("candidates_generate", candidates.pk)

    with django_capture_on_commit_callbacks(execute=True):
        created = candidates_generate(run_id=candidates.pk)
    assert created["tasks"] >= 1 and len(sent) == 4  # the last step queues nothing
    new = Response.objects.filter(model_version=version)
    assert new.exists() and all(r.source == version.name for r in new)
    done = pipeline_list(project=project)[0]
    assert done["status"] == "succeeded" and done["progress"] == 1.0
    assert [s["status"] for s in done["steps"]] == ["succeeded"] * 4 and done["steps"][2]["promotion"]["promoted"]


@pytest.mark.django_db
def test_a_failed_step_ends_the_round_and_a_missing_policy_stops_it(project_factory, tiny_reward_base, sent,
                                                                     django_capture_on_commit_callbacks, models_dir):
    from tests.training.conftest import import_preferences, separable_records

    project = project_factory()
    tiny = model_version_register(project=None, kind=ModelVersion.Kind.REWARD, name="tiny-base", base=str(tiny_reward_base),
                                  artifact_path=tiny_reward_base, config={"role": "base"})
    spec = pipeline_spec(step_params={"reward": {**requestable(fast_params(tiny_reward_base, epochs=1)), "base": tiny.pk}})
    first = pipeline_start(project=project, spec=spec)
    with django_capture_on_commit_callbacks(execute=True):
        assert reward_model_train(run_id=first.pk) is None  # no judgments: it fails
    assert sent == [] and TrainingRun.objects.filter(pipeline_id=first.pipeline_id).count() == 1
    assert pipeline_list(project=project)[0]["status"] == "failed"

    import_preferences(project, separable_records(8))
    second = pipeline_start(project=project, spec=spec)
    with django_capture_on_commit_callbacks(execute=True):
        assert reward_model_train(run_id=second.pk) is not None
    second.refresh_from_db()
    assert sent == [] and "no promoted policy" in second.params["pipeline_stopped"]
    latest = pipeline_list(project=project)[0]
    assert latest["pipeline_id"] == str(second.pipeline_id) and latest["status"] == "stopped"


@pytest.mark.django_db
def test_a_live_run_of_the_next_kind_stops_the_round(setup, tiny_reward_base, sent, django_capture_on_commit_callbacks):
    project, _ = setup
    manual = run_create(project=project, kind=TrainingRun.Kind.DPO)
    first = pipeline_start(project=project, spec=pipeline_spec(
        step_params={"reward": requestable(fast_params(tiny_reward_base, epochs=1))}))
    with django_capture_on_commit_callbacks(execute=True):
        reward_model_train(run_id=first.pk)
    first.refresh_from_db()
    assert f"({manual.pk}) was already live" in first.params["pipeline_stopped"] and sent == []


@pytest.mark.django_db
def test_the_schedule_starts_a_round_with_its_kwargs_and_never_two_at_once(setup, sent):
    project, _ = setup
    project.retrain_min_judgments = 1
    project.save()
    assert reward_retrain_check(project_id=project.pk) is None  # imported judgments that did not ask to count
    import_preferences(project, [dict(r, id="c" + r["id"], prompt="c " + r["prompt"]) for r in separable_records(1)],
                       count_for_retrain=True)
    run = reward_retrain_check(project_id=project.pk, policy_kind="ppo", auto_promote_margin=0.05,
                                        step_params={"ppo": {"config": {"iterations": 1}}})
    assert run.pipeline_id and run.params["trigger"] == "schedule"
    assert run.params["pipeline"]["steps"] == ["reward", "ppo", "evaluate", "candidates"]
    assert run.params["pipeline"]["auto_promote_margin"] == 0.05
    run_start(run_id=run.pk)
    run_params_update(run_id=run.pk, data_until_judgment_id=0)
    run_succeed(run_id=run.pk)  # the round goes on to PPO ...
    ppo = round_step(run.pipeline_id, "ppo")
    assert ppo.params["config"] == {"iterations": 1}
    # ... so no new round while it is live, though the judgments are still "new".
    assert reward_retrain_check(project_id=project.pk) is None
    run_fail(run_id=ppo.pk, error="x")
    plain = reward_retrain_check(project_id=project.pk)
    assert plain.params == {"trigger": "schedule"} and plain.pipeline_id != run.pipeline_id
    assert run_pipeline_spec(run=plain)["steps"][1] == "dpo"

