"""policy_train (SFT, DPO, PPO), policy_evaluate and auto-promotion, through the services on tiny
random models (the task bodies, run in this process; the real-worker path is tests/e2e/test_loop.py)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from labeling.models import Prompt
from labeling.services.imports import project_data_import
from labeling.splits import prompt_is_held_out
from tests.training.conftest import fast_params, import_preferences, separable_records
from training.models import ModelVersion, TrainingRun
from training.plan import promotion_decide
from training.selectors.versions import model_version_promoted_get
from training.services.evaluation import policy_evaluate
from training.services.policy import policy_train
from training.services.reward import reward_model_train
from training.services.runs import run_create
from training.services.versions import base_models_install, model_version_demote

torch.set_num_threads(1)

SFT_FAST = {"epochs": 2, "lr": 1e-2, "batch_size": 4, "micro_batch_size": 4, "warmup_ratio": 0.0, "precision": "fp32",
            "device": "cpu", "max_length": 96}
DPO_FAST = {"epochs": 1, "lr": 1e-2, "batch_size": 4, "micro_batch_size": 2, "warmup_ratio": 0.0, "precision": "fp32",
            "device": "cpu", "max_length": 96, "beta": 0.5}
PPO_FAST = {"iterations": 2, "rollout_batch_size": 4, "mini_batch_size": 2, "micro_batch_size": 2, "ppo_epochs": 1,
            "max_new_tokens": 6, "lr": 1e-2, "value_lr": 1e-2, "precision": "fp32", "device": "cpu", "rm_max_length": 64}
EVAL_FAST = {"max_new_tokens": 6, "device": "cpu", "precision": "fp32", "threads": 1, "max_prompts": 6, "max_demonstrations": 6}


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory):
    from tests.tiny_models import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("tiny-llama-policy"))


def weights(folder: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / "model.safetensors"))


def changed(a: str | Path, b: str | Path) -> bool:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    return any(not torch.equal(wa[k], wb[k]) for k in wa)


def import_records(project, records):
    body = "\n".join(json.dumps(r) for r in records).encode()
    return project_data_import(project=project, stream=io.BytesIO(body), filename="data.jsonl")


def demonstrations(n: int = 8, start: int = 0) -> list[dict[str, str]]:
    return [{"id": f"q{i}", "prompt": f"question number {i}?", "demonstration": f"yes, happy to help with {i}!"}
            for i in range(start, start + n)]


# q10..q21: the product's split (labeling.splits) holds q15 and q16 out, so evaluation has held-out demonstrations.
DEMO_START = 10


def train_reward(project, tiny_reward_base) -> ModelVersion:
    run = run_create(project=project, kind=TrainingRun.Kind.REWARD, params=fast_params(tiny_reward_base, epochs=2))
    version = reward_model_train(run_id=run.pk)
    assert version is not None and version.promoted, TrainingRun.objects.get(pk=run.pk).error
    return version


@pytest.fixture
def setup(project_factory, tiny_policy, tiny_reward_base, models_dir):
    """A project with 12 prompts (demonstrations and preference pairs on each) and the tiny base policy."""
    installed = base_models_install(policy_dir=tiny_policy, reward_base_dir=tiny_reward_base)
    project = project_factory(gen_max_new_tokens=6, system_prompt="Be brief.")
    import_preferences(project, [dict(r, id=f"q{i}") for i, r in enumerate(separable_records(12))])
    import_records(project, demonstrations(12, start=DEMO_START))
    return project, installed[ModelVersion.Kind.POLICY]


def _policy_run(project, kind, config, **params) -> tuple[TrainingRun, ModelVersion | None]:
    run = run_create(project=project, kind=kind, params={"config": config, "threads": 1, **params})
    version = policy_train(run_id=run.pk)
    run.refresh_from_db()
    return run, version


@pytest.mark.django_db
@pytest.mark.parametrize("include_chosen", [False, True])
def test_sft_registers_a_child_of_the_promoted_policy_with_new_weights(setup, include_chosen):
    project, base = setup
    run, version = _policy_run(project, TrainingRun.Kind.SFT, SFT_FAST, include_chosen=include_chosen)

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
    run, version = _policy_run(project, TrainingRun.Kind.DPO, DPO_FAST, promote="always")

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert version.parent == base and version.promoted  # promote=always promotes in the same transaction
    assert model_version_promoted_get(project=project, kind="policy") == version
    assert changed(version.artifact_path, base.artifact_path)
    assert run.params["pairs"] > 0 and run.params["data_until_judgment_id"] > 0 and run.params["parent_version"] == base.pk
    assert {"loss", "accuracy", "chosen_reward"} <= set(version.metrics["history"][0])

    # The next DPO run's parent (and reference) is the promoted DPO version.
    _, child = _policy_run(project, TrainingRun.Kind.DPO, DPO_FAST)
    assert child.parent == version and changed(child.artifact_path, version.artifact_path)


@pytest.mark.django_db
def test_ppo_trains_against_the_promoted_reward_model(setup, tiny_reward_base):
    project, base = setup
    run, version = _policy_run(project, TrainingRun.Kind.PPO, PPO_FAST)
    assert run.status == TrainingRun.Status.FAILED and "trained reward model" in run.error and version is None

    rm = train_reward(project, tiny_reward_base)
    run, version = _policy_run(project, TrainingRun.Kind.PPO, PPO_FAST)
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert version.parent == base and changed(version.artifact_path, base.artifact_path)
    assert run.params["reward_version"] == rm.pk
    assert version.metrics["iterations"] == 2 and len(version.metrics["history"]) == 2
    assert {"score", "kl", "policy_loss", "value_loss"} <= set(version.metrics["history"][0])
    assert version.metrics["value_init"] in {"reward", "policy"}


@pytest.mark.django_db
def test_policy_train_without_data_or_policy_fails_cleanly(project_factory, tiny_policy, tiny_reward_base, models_dir):
    project = project_factory()
    run, version = _policy_run(project, TrainingRun.Kind.DPO, DPO_FAST)
    assert version is None and run.status == TrainingRun.Status.FAILED and "no promoted policy" in run.error
    base_models_install(policy_dir=tiny_policy, reward_base_dir=tiny_reward_base)
    run, version = _policy_run(project, TrainingRun.Kind.DPO, DPO_FAST)
    assert version is None and "no preference pairs" in run.error
    assert not ModelVersion.objects.filter(project=project).exists()
    assert not list(models_dir.rglob("model.safetensors"))  # nothing half-written left behind
    # A duplicate delivery of a finished run does nothing.
    assert policy_train(run_id=run.pk) is None


@pytest.mark.django_db
def test_evaluation_stores_metrics_on_the_version(setup, tiny_reward_base):
    project, base = setup
    train_reward(project, tiny_reward_base)
    _, version = _policy_run(project, TrainingRun.Kind.SFT, SFT_FAST)
    run = run_create(project=project, kind=TrainingRun.Kind.EVALUATE, base_version=version, params=EVAL_FAST)

    result = policy_evaluate(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    version.refresh_from_db()
    evaluation = version.metrics["evaluation"]
    for key in ("reward_mean", "parent_reward_mean", "win_rate_vs_parent", "kl_per_token", "kl_per_response",
                "perplexity", "bleu", "rouge_l"):
        assert isinstance(evaluation[key], float), key
    assert 0.0 <= evaluation["win_rate_vs_parent"] <= 1.0 and evaluation["perplexity"] > 1.0
    assert evaluation["parent_version"] == base.pk and evaluation["run_id"] == run.pk
    assert evaluation["human_flags"] == {"responses_judged": 0, "any_flag_rate": None, "flag_rates": {}}
    assert evaluation["prompts"] >= 1 and evaluation["demonstrations"] >= 1
    assert result["promotion"] == {"auto": False} and not version.promoted
    assert run.params["evaluation"]["bleu"] == evaluation["bleu"]
    assert version.metrics["final_loss"] is not None  # training metrics kept


def test_promotion_decide_margins():
    decide = promotion_decide
    assert decide(evaluation={"win_rate_vs_parent": 0.6}, margin=0.1)[0]
    assert not decide(evaluation={"win_rate_vs_parent": 0.59}, margin=0.1)[0]
    assert decide(evaluation={"win_rate_vs_parent": 0.5}, margin=0.0)[0]
    assert not decide(evaluation={}, margin=0.0)[0]
    assert decide(evaluation={"reward_mean": 1.0, "parent_reward_mean": 0.5}, margin=0.5, metric="reward")[0]
    assert not decide(evaluation={"reward_mean": 1.0, "parent_reward_mean": 0.6}, margin=0.5, metric="reward")[0]
    with pytest.raises(Exception):
        decide(evaluation={}, margin=0.0, metric="nope")


@pytest.mark.django_db
def test_auto_promotion_by_margin_only_over_the_promoted_parent(setup, tiny_reward_base):
    project, base = setup
    train_reward(project, tiny_reward_base)
    _, version = _policy_run(project, TrainingRun.Kind.SFT, SFT_FAST)

    def evaluate(margin):
        run = run_create(project=project, kind=TrainingRun.Kind.EVALUATE, base_version=version,
                                  params={**EVAL_FAST, "auto_promote_margin": margin})
        policy_evaluate(run_id=run.pk)
        run.refresh_from_db()
        assert run.status == TrainingRun.Status.SUCCEEDED, run.error
        version.refresh_from_db()
        return run.params["promotion"]

    high = evaluate(0.51)  # a win rate above 1.01 is impossible
    assert high["auto"] and not high["promoted"] and "<" in high["reason"] and not version.promoted
    # The parent is no longer the promoted policy: a manual decision is not overridden.
    _, other = _policy_run(project, TrainingRun.Kind.SFT, SFT_FAST, promote="always")
    refused = evaluate(-0.5)
    assert not refused["promoted"] and "not the parent" in refused["reason"] and not version.promoted
    model_version_demote(version=other)
    low = evaluate(-0.5)  # any win rate >= 0
    assert low["promoted"] and version.promoted
    assert model_version_promoted_get(project=project, kind="policy") == version
