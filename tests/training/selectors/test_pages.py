"""training.selectors.pages: what the training tab's pages show, as plain values."""
from __future__ import annotations

import pytest

from training.models import ModelVersion, TrainingRun
from training.selectors.pages import metric_sections, run_page_get, runs_page_get, version_page_get
from training.services.runs import run_create

pytestmark = pytest.mark.django_db


def test_metric_sections_name_round_and_group_the_metrics():
    sections = metric_sections({"val_accuracy": 0.81234, "train_seconds": 12.34, "zeta": [1, 2, 3], "flag": True,
                                "sha256": "0123456789abcdef0123", "evaluation": {"win_rate_vs_parent": 0.6},
                                "evaluations": {"other": {"accuracy": 0.7}}})
    assert [s["title"] for s in sections] == ["", "Evaluation against its parent"]  # other data is shown elsewhere
    assert [(r["label"], r["value"]) for r in sections[0]["rows"]] == [
        ("Held-out accuracy", "0.812"), ("Training time", "12.3 s"), ("sha256", "0123456789abcdef…"), ("Flag", "yes")]
    assert sections[1]["rows"] == [
        {"label": "Win rate vs parent", "key": "evaluation.win_rate_vs_parent", "value": "0.600"}]
    assert metric_sections({}) == []


def test_a_ppo_run_page_charts_by_iteration_the_usual_curves_first(project_factory):
    run = run_create(project=project_factory(), kind=TrainingRun.Kind.PPO)
    points = [{"iteration": i, "step": 100 + i, "zeta": i, "kl": 0.1 * i, "score": i} for i in range(3)]
    run.metrics_history = points[:2] + [{**points[2], "once": 1}, {"step": 200, "loss": 0.5}, {"step": 201, "loss": 0.4}]
    page = run_page_get(run=run)
    # "loss" has no iteration (not on this axis), "once" one point: no curve for either.
    assert [c.key for c in page["curves"]] == ["score", "kl", "zeta"]
    assert [p["step"] for p in page["curves"][0].points] == [0, 1, 2] and page["active"]


def test_the_runs_page_rows_carry_evaluation_adapter_and_flags(project_factory, tmp_path):
    project = project_factory()
    policy = ModelVersion.objects.create(project=project, kind=ModelVersion.Kind.POLICY, name="p", base="b",
                                         artifact_path=str(tmp_path), metrics={"evaluation": {"bleu": 0.5}})
    for name in ("adapter_config.json", "pairwise_adapter.json"):
        (tmp_path / name).write_text("{}")
    reward = ModelVersion.objects.create(project=project, kind=ModelVersion.Kind.REWARD, name="r", base="b",
                                         artifact_path=str(tmp_path / "rm"), metrics={"val_accuracy": 0.7})
    page = runs_page_get(project=project)
    rows = {row.version.pk: row for row in page["versions"]}
    row = rows[policy.pk]
    assert (row.evaluation, row.adapter, row.flags["responses_judged"]) == ({"bleu": 0.5}, True, 0)
    assert (rows[reward.pk].adapter, rows[reward.pk].flags) == (False, {})  # a reward folder is never an adapter here
    assert page["policies"] == [policy] and page["reward_trained"] == reward and page["promoted_reward"] is None
    assert [p["val_accuracy"] for p in page["reward_series"]] == [0.7] and page["runs"] == [] and page["curves"] == []


def test_a_version_page_lists_its_evaluations_by_name(project_factory, tmp_path):
    version = ModelVersion.objects.create(
        project=project_factory(), kind=ModelVersion.Kind.REWARD, name="r", base="b", artifact_path=str(tmp_path),
        metrics={"evaluations": {"zz": {"accuracy": 0.6}, "aa": {"accuracy": 0.9}}, "promotion": {"reason": "why"}})
    page = version_page_get(version=version)
    assert [e["name"] for e in page["evaluations"]] == ["aa", "zz"] and page["promotion"] == {"reason": "why"}
    assert page["lineage"] == [] and page["run"] is None and not page["adapter"]
