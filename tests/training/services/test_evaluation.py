"""training.services.evaluation: metrics on the version and auto-promotion."""
from __future__ import annotations

import pytest

from tests.training.conftest import EVAL_FAST, SFT_FAST, policy_run, train_reward
from training.dataset import held_out_pairs
from training.models import TrainingRun
from training.selectors.data import training_dataset_collect, training_filters
from training.selectors.versions import model_card_text, model_version_promoted_get
from training.services.evaluation import policy_evaluate
from training.services.runs import run_create
from training.services.versions import model_version_demote


@pytest.mark.django_db
def test_evaluation_stores_metrics_on_the_version(setup, tiny_reward_base):
    project, base = setup
    train_reward(project, tiny_reward_base)
    _, version = policy_run(project, TrainingRun.Kind.SFT, SFT_FAST)
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
    # Preference accuracy on the held-out prompts' human pairs, with no judge (issue 29).
    held = held_out_pairs(training_dataset_collect(project=project, filters=training_filters(params={}, project=project)))
    assert evaluation["eval_pairs"] == len(held) >= 1
    for key in ("pref_accuracy_parent", "pref_accuracy_policy", "pref_accuracy_delta", "implicit_reward_accuracy",
                "implicit_margin_mean"):
        assert isinstance(evaluation[key], float), key
    low, high = evaluation["pref_accuracy_delta_ci95"]
    assert low <= evaluation["pref_accuracy_delta"] <= high


@pytest.mark.django_db
def test_a_promotion_that_requires_a_preference_gain_says_so(setup, tiny_reward_base):
    project, base = setup
    train_reward(project, tiny_reward_base)
    _, version = policy_run(project, TrainingRun.Kind.SFT, SFT_FAST)
    run = run_create(project=project, kind=TrainingRun.Kind.EVALUATE, base_version=version,
                     params={**EVAL_FAST, "auto_promote_margin": -0.5, "promote_requires_preference_gain": True})
    policy_evaluate(run_id=run.pk)
    run.refresh_from_db()
    version.refresh_from_db()
    low = version.metrics["evaluation"]["pref_accuracy_per_token_delta_ci95"][0]
    decision = run.params["promotion"]
    # A margin of -0.5 promotes on any win rate: the preference rule alone decides.
    assert decision["promoted"] == (low >= 0) == version.promoted
    if not decision["promoted"]:
        assert "reaches below zero" in decision["reason"]


@pytest.mark.django_db
def test_auto_promotion_by_margin_only_over_the_promoted_parent(setup, tiny_reward_base):
    project, base = setup
    train_reward(project, tiny_reward_base)
    _, version = policy_run(project, TrainingRun.Kind.SFT, SFT_FAST)

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
    _, other = policy_run(project, TrainingRun.Kind.SFT, SFT_FAST, promote="always")
    refused = evaluate(-0.5)
    assert not refused["promoted"] and "not the parent" in refused["reason"] and not version.promoted
    model_version_demote(version=other)
    low = evaluate(-0.5)  # any win rate >= 0
    assert low["promoted"] and version.promoted
    assert model_version_promoted_get(project=project, kind="policy") == version



@pytest.mark.django_db
def test_a_second_round_s_version_is_also_judged_against_the_first_policy(setup, tiny_reward_base, client, member):
    from django.urls import reverse

    from training.selectors.versions import policy_win_rate_series

    project, base = setup
    train_reward(project, tiny_reward_base)
    _, first = policy_run(project, TrainingRun.Kind.SFT, SFT_FAST)
    run = run_create(project=project, kind=TrainingRun.Kind.EVALUATE, base_version=first, params=EVAL_FAST)
    assert policy_evaluate(run_id=run.pk) is not None
    from training.services.versions import model_version_promote

    model_version_promote(version=first)  # the next round trains from it
    _, second = policy_run(project, TrainingRun.Kind.SFT, SFT_FAST)
    run = run_create(project=project, kind=TrainingRun.Kind.EVALUATE, base_version=second, params=EVAL_FAST)
    assert policy_evaluate(run_id=run.pk) is not None

    first.refresh_from_db()
    second.refresh_from_db()
    assert second.parent == first and "win_rate_vs_base" not in first.metrics["evaluation"]  # its parent is the base
    evaluation = second.metrics["evaluation"]
    assert 0.0 <= evaluation["win_rate_vs_base"] <= 1.0
    for key in ("win_rate_vs_parent_ci95", "win_rate_vs_base_ci95"):
        low, high = evaluation[key]
        assert 0.0 <= low <= high <= 1.0
    series = policy_win_rate_series(project=project)
    assert [p["version"] for p in series] == [first.pk, second.pk]
    assert series[1]["win_rate"] == evaluation["win_rate_vs_base"] and series[0]["ci95"] == first.metrics["evaluation"]["win_rate_vs_parent_ci95"]
    client.force_login(member(project, "viewer"))
    page = client.get(reverse("training-runs", args=[project.slug]))
    assert page.status_code == 200 and b"Win rate across versions" in page.content and b"win-rates" in page.content
    # Beside the win rate: preference accuracy on held-out human pairs, its gain over the parent and the interval.
    low, high = evaluation["pref_accuracy_delta_ci95"]
    shown = (f'{evaluation["pref_accuracy_policy"]:.3f} ({evaluation["pref_accuracy_delta"]:+.3f}, {low:+.3f} to '
             f'{high:+.3f}) on {evaluation["eval_pairs"]}')
    assert shown.encode() in page.content
    version_page = client.get(reverse("training-version-detail", args=[project.slug, second.pk]))
    assert b"Preference-accuracy gain over the parent" in version_page.content
    card = model_card_text(version=second)  # the card's model-index carries it as a result
    assert '"type": "pref_accuracy_delta"' in card and '"type": "implicit_reward_accuracy"' in card
