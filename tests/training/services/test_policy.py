"""training.services.policy: SFT, DPO and PPO runs on tiny models."""
from __future__ import annotations

import pytest

from labeling.models import Prompt
from labeling.splits import prompt_is_held_out
from training.dataset import held_out_pairs
from training.selectors.data import training_dataset_collect, training_filters
from tests.training.conftest import DEMO_START, DPO_FAST, PPO_FAST, SFT_FAST, changed, policy_run, train_reward
from training.models import ModelVersion, TrainingRun
from training.selectors.versions import model_version_promoted_get
from training.services.policy import policy_train
from training.services.versions import base_models_install


@pytest.mark.django_db
@pytest.mark.parametrize("include_chosen", [False, True])
def test_sft_registers_a_child_of_the_promoted_policy_with_new_weights(setup, include_chosen):
    project, base = setup
    run, version = policy_run(project, TrainingRun.Kind.SFT, SFT_FAST, include_chosen=include_chosen)

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.result_version == version and version.kind == ModelVersion.Kind.POLICY and version.project == project
    assert version.parent == base and not version.promoted
    assert changed(version.artifact_path, base.artifact_path)
    assert version.metrics["steps"] > 0 and version.metrics["final_loss"] is not None and version.metrics["history"]
    assert version.config["trainer"] == "sft" and version.config["values"]["system_prompt"] == "Be brief."
    # Held-out prompts stay out of training; chosen responses add one example per judgment.
    # Demonstrations sit on prompts q10..q21; the preference pairs on prompts keyed by a content hash.
    held = sum(prompt_is_held_out(f"q{i}") for i in range(DEMO_START, DEMO_START + 12))
    judged = Prompt.objects.filter(project=project, tasks__isnull=False).distinct()
    held_judged = sum(prompt_is_held_out(p.external_id) for p in judged)
    assert run.params["examples"] == (12 - held) + ((len(judged) - held_judged) if include_chosen else 0)
    assert run.metrics_history and run.progress == 1.0


@pytest.mark.django_db
def test_dpo_uses_the_parent_as_reference_and_changes_the_weights(setup):
    project, base = setup
    run, version = policy_run(project, TrainingRun.Kind.DPO, DPO_FAST, promote="always")

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert version.parent == base and version.promoted  # promote=always promotes in the same transaction
    assert model_version_promoted_get(project=project, kind="policy") == version
    assert changed(version.artifact_path, base.artifact_path)
    assert run.params["pairs"] > 0 and run.params["data_until_judgment_id"] > 0 and run.params["parent_version"] == base.pk
    assert {"loss", "accuracy", "chosen_reward"} <= set(version.metrics["history"][0])
    # It measured itself on the held-out prompts' pairs, which it never trained on: 1/2 at the start by construction.
    held = held_out_pairs(training_dataset_collect(project=project, filters=training_filters(params={}, project=project)))
    assert version.metrics["eval_pairs"] == len(held) >= 1 and version.metrics["eval_implicit_reward_accuracy_start"] == 0.5
    assert 0.0 <= version.metrics["eval_implicit_reward_accuracy_end"] <= 1.0
    assert any(point.get("step") == 0 and "eval_implicit_reward_accuracy" in point for point in run.metrics_history)

    # The next DPO run's parent (and reference) is the promoted DPO version.
    _, child = policy_run(project, TrainingRun.Kind.DPO, DPO_FAST)
    assert child.parent == version and changed(child.artifact_path, version.artifact_path)


@pytest.mark.django_db
def test_ppo_trains_against_the_promoted_reward_model(setup, tiny_reward_base):
    project, base = setup
    run, version = policy_run(project, TrainingRun.Kind.PPO, PPO_FAST)
    assert run.status == TrainingRun.Status.FAILED and "trained reward model" in run.error and version is None

    rm = train_reward(project, tiny_reward_base)
    run, version = policy_run(project, TrainingRun.Kind.PPO, PPO_FAST)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert version.parent == base and changed(version.artifact_path, base.artifact_path)
    assert run.params["reward_version"] == rm.pk
    assert version.metrics["iterations"] == 2 and len(version.metrics["history"]) == 2
    assert {"score", "kl", "policy_loss", "value_loss"} <= set(version.metrics["history"][0])
    assert version.metrics["value_init"] in {"reward", "policy"}


@pytest.mark.django_db
def test_policy_train_without_data_or_policy_fails_cleanly(project_factory, tiny_policy, tiny_reward_base, models_dir):
    project = project_factory()
    run, version = policy_run(project, TrainingRun.Kind.DPO, DPO_FAST)
    assert version is None and run.status == TrainingRun.Status.FAILED and "no promoted policy" in run.error
    base_models_install(policy_dir=tiny_policy, reward_base_dir=tiny_reward_base)
    run, version = policy_run(project, TrainingRun.Kind.DPO, DPO_FAST)
    assert version is None and "no preference pairs" in run.error
    assert not ModelVersion.objects.filter(project=project).exists()
    assert not list(models_dir.rglob("model.safetensors"))  # nothing half-written left behind
    # A duplicate delivery of a finished run does nothing.
    assert policy_train(run_id=run.pk) is None

