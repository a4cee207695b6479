"""training.services.reward: the reward run body in process."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.conftest import REWARD, fast_params, import_preferences, separable_records
from training.models import TrainingRun
from training.services.reward import reward_model_evaluate, reward_model_train
from training.services.runs import run_create


@pytest.mark.django_db(transaction=True)
def test_reward_model_train_in_process_registers_a_complete_version(project_factory, tiny_reward_base, models_dir):
    project = project_factory(reward_promote_min_heldout_groups=0)  # promoted without held-out evidence
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
    assert {"model.safetensors", "modeling_pairwise_reward.py", "pairwise_config.json", "metrics.json", "config.json"} <= files
    assert version.metrics["final_train_loss"] < version.metrics["history"][0]["loss"]
    assert version.config["data_until_judgment_id"] == run.params["data_until_judgment_id"]
    result = reward_model_evaluate(version=version, records=separable_records(24))
    assert result["pairs"] == 24 and result["accuracy"] >= 0.9 and result["mean_margin"] > 0


@pytest.mark.django_db
def test_reward_model_train_without_comparisons_fails_cleanly(project_factory, tiny_reward_base):
    project = project_factory()
    run = run_create(project=project, kind=REWARD, params=fast_params(tiny_reward_base))
    assert reward_model_train(run_id=run.pk) is None
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and "no judgments" in run.error



@pytest.mark.django_db(transaction=True)
def test_a_reward_run_on_a_label_model_s_soft_labels_says_so_in_its_card(project_factory, tiny_reward_base, models_dir):
    project = project_factory(reward_promote_min_heldout_groups=0)
    import_preferences(project, separable_records(24))
    params = {**fast_params(tiny_reward_base, epochs=4), "label_model": "dawid-skene"}
    run = run_create(project=project, kind=REWARD, params=params)
    version = reward_model_train(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    data = version.metrics["data"]
    # An imported dataset votes as one annotator: its consensus is its own answer, one record per task.
    assert data["label_model"]["model"] == "dawid-skene" and data["label_model"]["annotators"] == 1
    assert data["consensus_tasks"] == data["judgments"] == 24 and data["filters"]["label_model"] == "dawid-skene"
    assert version.metrics["final_train_loss"] < version.metrics["history"][0]["loss"]
    card = (Path(version.artifact_path) / "README.md").read_text()
    assert "Labels: dawid-skene consensus (soft targets) of 24 judgments on 24 tasks" in card
