"""training.plan: promotion decisions and round shapes (pure functions). What a request may ask
for (run params, round specs, trainer configs) is training.runspec: tests/training/test_runspec.py."""
from __future__ import annotations

import dataclasses

import pytest

from training import plan, runspec
from training.plan import promotion_decide


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



def test_promotion_can_require_a_preference_gain_on_held_out_human_pairs():
    """Off by default; on, a win rate is not enough: the paired interval of the preference-accuracy gain
    over the parent must not reach below zero, and no measurement means no promotion."""
    won = {"win_rate_vs_parent": 0.9}
    assert promotion_decide(evaluation=won, margin=0.1)[0]
    ok, why = promotion_decide(evaluation=won, margin=0.1, requires_preference_gain=True)
    assert not ok and "no preference accuracy" in why
    below = {**won, "pref_accuracy_per_token_delta": 0.02, "pref_accuracy_per_token_delta_ci95": [-0.01, 0.05],
             "pref_accuracy_delta_ci95": [0.01, 0.05]}  # the summed gain is not what the rule reads
    ok, why = promotion_decide(evaluation=below, margin=0.1, requires_preference_gain=True)
    assert not ok and "[-0.010, +0.050] reaches below zero" in why
    above = {**won, "pref_accuracy_per_token_delta": 0.04, "pref_accuracy_per_token_delta_ci95": [0.0, 0.08],
             "pref_accuracy_delta_ci95": [-0.02, 0.03]}
    assert promotion_decide(evaluation=above, margin=0.1, requires_preference_gain=True)[0]
    assert not promotion_decide(evaluation={**above, "win_rate_vs_parent": 0.55}, margin=0.1, requires_preference_gain=True)[0]


def test_promotion_refuses_an_unknown_metric_naming_the_field():
    with pytest.raises(plan.PlanError) as exc:
        promotion_decide(evaluation={}, margin=0.0, metric="nope")
    assert exc.value.field == "promote_metric"


def test_a_round_runs_reward_policy_evaluation_candidates_in_that_order():
    spec = runspec.round_spec({"policy_kind": "ppo", "auto_promote_margin": 0.05,
                               "step_params": {"ppo": {"config": {"iterations": 1}}}}, max_processes=1)
    assert spec["steps"] == ["reward", "ppo", "evaluate", "candidates"]
    nxt = [plan.round_next_kind(spec=spec, kind=k) for k in spec["steps"]]
    assert nxt == ["ppo", "evaluate", "candidates", None]
    assert plan.round_next_kind(spec=spec, kind="dpo") is None  # not a step of this round
    assert plan.round_step_params(spec=spec, kind="ppo") == {"config": {"iterations": 1}}
    # The evaluation step carries the round's promotion rule.
    assert plan.round_step_params(spec=spec, kind="evaluate") == {"auto_promote_margin": 0.05, "promote_metric": "win_rate"}
    assert runspec.round_spec({}, max_processes=1)["steps"][1] == plan.DEFAULT_POLICY_KIND


def test_every_run_kind_has_a_task_and_matches_the_model_s_choices():
    from training.models import TrainingRun

    assert set(plan.RUN_KINDS) == set(TrainingRun.Kind.values) == set(plan.TASK_OF_KIND)
    assert plan.jsonable({"when": dataclasses}) == {"when": str(dataclasses)}
