"""training.plan: promotion decisions, round shapes and per-kind run params (pure functions)."""
from __future__ import annotations

import dataclasses

import pytest

from training import plan
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



def test_promotion_refuses_an_unknown_metric_naming_the_field():
    with pytest.raises(plan.PlanError) as exc:
        promotion_decide(evaluation={}, margin=0.0, metric="nope")
    assert exc.value.field == "promote_metric"


@pytest.mark.parametrize("kind, promote", [("reward", "always"), ("sft", "never"), ("dpo", "never"), ("ppo", "never")])
def test_run_params_decide_each_training_kind_s_promotion_once(kind, promote):
    assert plan.run_params(kind=kind, trigger="api")["promote"] == promote
    assert plan.run_params(kind=kind, trigger="api", promote="if_none")["promote"] == "if_none"


def test_run_params_keep_only_what_a_kind_uses():
    assert plan.run_params(kind="reward", trigger="command", base="/m", include_chosen=True) == {
        "trigger": "command", "promote": "always", "base": "/m"}
    assert plan.run_params(kind="sft", trigger="dashboard", base="/m", include_chosen=True) == {
        "trigger": "dashboard", "promote": "never", "include_chosen": True}
    assert plan.run_params(kind="evaluate", trigger="api", auto_promote_margin=0.1) == {
        "trigger": "api", "auto_promote_margin": 0.1, "promote_metric": "win_rate"}
    assert plan.run_params(kind="evaluate", trigger="api") == {"trigger": "api"}
    assert plan.run_params(kind="candidates", trigger="command", max_prompts=3, config={"x": 1}) == {
        "trigger": "command", "config": {"x": 1}, "max_prompts": 3}


@pytest.mark.parametrize("bad, field", [
    ({"kind": "nope"}, "kind"), ({"kind": "dpo", "promote": "sometimes"}, "promote"),
])
def test_run_params_refuse_bad_options_naming_the_field(bad, field):
    with pytest.raises(plan.PlanError) as exc:
        plan.run_params(trigger="api", **bad)
    assert exc.value.field == field


def test_a_round_runs_reward_policy_evaluation_candidates_in_that_order():
    spec = plan.round_spec(policy_kind="ppo", auto_promote_margin=0.05, step_params={"ppo": {"config": {"iterations": 1}}})
    assert spec["steps"] == ["reward", "ppo", "evaluate", "candidates"]
    nxt = [plan.round_next_kind(spec=spec, kind=k) for k in spec["steps"]]
    assert nxt == ["ppo", "evaluate", "candidates", None]
    assert plan.round_next_kind(spec=spec, kind="dpo") is None  # not a step of this round
    assert plan.round_step_params(spec=spec, kind="ppo") == {"config": {"iterations": 1}}
    # The evaluation step carries the round's promotion rule.
    assert plan.round_step_params(spec=spec, kind="evaluate") == {"auto_promote_margin": 0.05, "promote_metric": "win_rate"}
    assert plan.round_spec()["steps"][1] == plan.DEFAULT_POLICY_KIND


@pytest.mark.parametrize("options, field", [
    ({"policy_kind": "reward"}, "policy_kind"), ({"promote_metric": "vibes"}, "promote_metric"),
    ({"step_params": {"bogus": {}}}, "step_params"), ({"step_params": {"dpo": 3}}, "step_params"),
])
def test_round_spec_refuses_bad_options_naming_the_field(options, field):
    with pytest.raises(plan.PlanError) as exc:
        plan.round_spec(**options)
    assert exc.value.field == field


def test_trainer_config_takes_known_overrides_over_the_fixed_values():
    @dataclasses.dataclass
    class Config:
        lr: float = 1.0
        system_prompt: str = ""

    config = plan.trainer_config(Config, {"config": {"lr": 0.5, "unknown": 1}}, system_prompt="Be brief.")
    assert config == Config(lr=0.5, system_prompt="Be brief.")


def test_every_run_kind_has_a_task_and_matches_the_model_s_choices():
    from training.models import TrainingRun

    assert set(plan.RUN_KINDS) == set(TrainingRun.Kind.values) == set(plan.TASK_OF_KIND)
    assert plan.jsonable({"when": dataclasses}) == {"when": str(dataclasses)}
