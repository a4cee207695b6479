"""training.runspec: the one parser of run, round, A/B and schedule requests (pure: no database)."""
from __future__ import annotations

import dataclasses

import pytest

from training import plan, runspec
from training.runspec import SpecError, run_spec


def refused(call, *args, **kwargs) -> dict[str, str]:
    with pytest.raises(SpecError) as exc:
        call(*args, **kwargs)
    return exc.value.errors


def test_the_config_field_lists_are_the_trainer_dataclasses_fields():
    """The web process reads the lists; the worker builds the dataclasses (training.ml imports torch)."""
    from training.ml.dpo import DPOConfig
    from training.ml.ppo import PPOConfig
    from training.ml.reward.config import RewardConfig
    from training.ml.sft import SFTConfig

    for kind, cls in (("reward", RewardConfig), ("sft", SFTConfig), ("dpo", DPOConfig), ("ppo", PPOConfig)):
        assert runspec.CONFIG_FIELDS[kind] == {f.name: f.type for f in dataclasses.fields(cls)}, kind


@pytest.mark.parametrize("kind, promote", [("reward", "always"), ("sft", "never"), ("dpo", "never"), ("ppo", "never")])
def test_each_training_kind_s_promotion_is_decided_once(kind, promote):
    assert run_spec(kind, {}, max_processes=1)["promote"] == promote
    assert run_spec(kind, {"promote": "if_none"}, max_processes=1)["promote"] == "if_none"


def test_a_run_spec_keeps_what_its_kind_uses_normalised():
    assert run_spec("reward", {"base": "MiniLM-L6", "config": {"epochs": 2, "lr": 1e-5}}, max_processes=1) == {
        "base": "MiniLM-L6", "config": {"epochs": 2, "lr": 1e-5}, "promote": "always"}
    assert run_spec("reward", {"base": "7", "mix_snapshots": [3, 3, 4]}, max_processes=1) == {
        "base": 7, "mix_snapshots": [3, 4], "promote": "always"}
    assert run_spec("reward", {"config": {"length_debias": "odin"}}, max_processes=1)["config"] == {"length_debias": "odin"}
    assert run_spec("sft", {"include_chosen": True, "processes": 2}, max_processes=4) == {
        "include_chosen": True, "processes": 2, "promote": "never"}
    assert run_spec("sft", {}, max_processes=1) == {"include_chosen": False, "promote": "never"}
    assert run_spec("evaluate", {"version": 3, "auto_promote_margin": 0.1}, max_processes=1) == {
        "version": 3, "auto_promote_margin": 0.1, "promote_metric": "win_rate"}
    assert run_spec("evaluate", {"version": 3, "auto_promote_margin": None, "promote_metric": "reward"},
                    max_processes=1) == {"version": 3}
    assert run_spec("candidates", {"max_prompts": 3}, max_processes=1) == {"max_prompts": 3}
    assert run_spec("reward", {"label_model": "dawid-skene", "label_targets": "hard"}, max_processes=1) == {
        "label_model": "dawid-skene", "label_targets": "hard", "promote": "always"}
    assert run_spec("reward", {"sources": "both", "machine_weight": 0.5}, max_processes=1) == {
        "sources": "both", "machine_weight": 0.5, "promote": "always"}
    assert run_spec("dpo", {"sources": "machine"}, max_processes=1) == {"sources": "machine", "promote": "never"}


@pytest.mark.parametrize("kind, data, field, says", [
    ("nope", {}, "kind", "One of"),
    ("dpo", {"promote": "sometimes"}, "promote", "one of always"),
    ("reward", {"epochs": 2}, "epochs", "unknown key; allowed: config"),
    ("reward", {"config": {"epoch": 2}}, "config", "epoch: unknown key; allowed:"),
    ("reward", {"config": {"epochs": "2"}}, "config", "epochs: a whole number"),
    ("reward", {"config": {"lr": float("nan")}}, "config", "lr: a number"),
    ("reward", {"config": {"precision": "fp8"}}, "config", "precision: one of"),
    ("reward", {"config": {"device": "cuda:1"}}, "config", "device: operator-only"),
    ("reward", {"config": {"base_model": "/srv/other/model"}}, "config", "base_model:"),
    ("sft", {"config": {"system_prompt": "x"}}, "config", "system_prompt:"),
    ("sft", {"config": [1]}, "config", "an object"),
    ("reward", {"config": {"lora_target_modules": "../x y"}}, "config", "lora_target_modules:"),
    ("reward", {"config": {"length_debias": "regress"}}, "config", "length_debias: one of 'none', 'odin'"),
    ("reward", {"base": "/srv/pairwise/models/other-project/reward-run3"}, "base", "paths and hub ids"),
    ("reward", {"base": "org/some-model"}, "base", "paths and hub ids"),
    ("reward", {"processes": 2}, "processes", "from 1 to 1"),
    ("reward", {"processes": True}, "processes", "whole number"),
    ("ppo", {"processes": 1}, "processes", "Only reward, sft, dpo runs take processes"),
    ("dpo", {"mix_snapshots": [1]}, "mix_snapshots", "Only reward runs take mix_snapshots"),
    ("reward", {"mix_snapshots": "7"}, "mix_snapshots", "Up to 16"),
    ("reward", {"mix_snapshots": [0]}, "mix_snapshots", "Up to 16"),
    ("reward", {"snapshot": "3"}, "snapshot", "whole number"),
    ("reward", {"include_gold": "yes"}, "include_gold", "true or false"),
    ("reward", {"min_gold_accuracy": 2}, "min_gold_accuracy", "from 0 to 1"),
    ("reward", {"label_model": "glad"}, "label_model", "one of none, majority, dawid-skene, position-em"),
    ("dpo", {"label_targets": "fuzzy"}, "label_targets", "one of soft, hard"),
    ("evaluate", {"label_model": "majority"}, "label_model", "Only reward, sft, dpo, ppo runs take label_model"),
    ("reward", {"sources": "robots"}, "sources", "one of human, machine, both"),
    ("reward", {"sources": "both", "machine_weight": 1.5}, "machine_weight", "from 0 to 1"),
    ("reward", {"machine_weight": 0.5}, "machine_weight", "only with sources 'both'"),
    ("dpo", {"sources": "machine", "machine_weight": 0.5}, "machine_weight", "only with sources 'both'"),
    ("reward", {"sources": "machine", "label_model": "majority"}, "label_model", "fits human judgments"),
    ("evaluate", {"sources": "both"}, "sources", "Only reward, sft, dpo, ppo runs take sources"),
    ("evaluate", {"auto_promote_margin": "big"}, "auto_promote_margin", "a number"),
    ("candidates", {"max_prompts": 0}, "max_prompts", "from 1 to"),
    ("candidates", {"ab": {"versions": [1, 2]}}, "ab", "unknown key"),
    ("reward", {"output_dir": "/tmp/x"}, "output_dir", "operator-only (settings.PAIRWISE_MODELS_DIR)"),
    ("sft", {"accelerate_config": "/etc/x.yaml"}, "accelerate_config", "operator-only"),
    ("dpo", {"threads": 64}, "threads", "operator-only (settings.PAIRWISE_TRAIN_THREADS)"),
    ("candidates", {"device": "cuda:1"}, "device", "operator-only (settings.PAIRWISE_DEVICE)"),
    ("candidates", {"backend": "vllm"}, "backend", "operator-only"),
])
def test_a_run_spec_refuses_naming_the_field(kind, data, field, says):
    errors = refused(run_spec, kind, data, max_processes=1)
    assert field in errors and says in errors[field], errors


def test_every_bad_field_is_named_at_once():
    errors = refused(run_spec, "dpo", {"epoch": 1, "threads": 2, "config": {"x": 1}}, max_processes=1)
    assert set(errors) == {"epoch", "threads", "config"}


def test_a_round_checks_each_step_as_that_kind_s_run():
    spec = runspec.round_spec({"policy_kind": "sft", "step_params": {"sft": {"config": {"epochs": 1}}}}, max_processes=1)
    assert spec["params"] == {"sft": {"config": {"epochs": 1}}} and spec["steps"][1] == "sft"
    for step_params, says in [
        ({"bogus": {}}, "bogus: not a step"), ({"dpo": 3}, "dpo.non_field_errors"),
        ({"dpo": {"config": {"epoch": 2}}}, "dpo.config: epoch: unknown key"),
        ({"candidates": {"ab": {"versions": [1, 2]}}}, "candidates.ab: unknown key"),
        ({"candidates": {"version": 4}}, "candidates.version: a round picks the versions itself"),
        ({"reward": {"base": "/srv/models/x"}}, "reward.base:"), ({"reward": {"threads": 2}}, "reward.threads: operator-only"),
        ({"dpo": {"processes": 8}}, "dpo.processes: a whole number from 1 to 1"),
        ({"candidates": {"device": "cuda"}}, "candidates.device: operator-only"),
        ({"reward": {"mix_snapshots": [0]}}, "reward.mix_snapshots"),
    ]:
        errors = refused(runspec.round_spec, {"step_params": step_params}, max_processes=1)
        assert says in errors["step_params"], (step_params, errors)
    errors = refused(runspec.round_spec, {"policy_kind": "reward", "promote_metric": "vibes", "colour": 1}, max_processes=1)
    assert set(errors) == {"policy_kind", "promote_metric", "colour"}


def test_a_stored_round_step_is_parsed_again_when_it_is_queued():
    spec = runspec.round_spec({"auto_promote_margin": 0.1}, max_processes=1)
    assert runspec.round_step_spec(spec, "evaluate", max_processes=1) == {"auto_promote_margin": 0.1, "promote_metric": "win_rate"}
    spec["params"]["candidates"] = {"ab": {"versions": [1, 2]}}  # edited in the database since
    assert "ab" in refused(runspec.round_step_spec, spec, "candidates", max_processes=1)


def test_ab_and_schedule_options():
    assert runspec.ab_spec({"version_a": 1, "version_b": 2}) == {"version_a": 1, "version_b": 2, "prompts": 20}
    errors = refused(runspec.ab_spec, {"version_a": "1", "prompts": 5000, "seed": 3})
    assert set(errors) == {"version_a", "version_b", "prompts", "seed"}
    assert runspec.schedule_options({"project_id": 1, "policy_kind": "sft"}) == {"policy_kind": "sft"}
    assert "device" in refused(runspec.schedule_options, {"project_id": 1, "device": "cuda"})


def test_the_worker_s_trainer_config_fails_on_an_unknown_key_instead_of_dropping_it():
    @dataclasses.dataclass
    class Config:
        lr: float = 1.0
        system_prompt: str = ""

    assert runspec.trainer_config(Config, {"config": {"lr": 0.5}}, system_prompt="Be brief.") == Config(0.5, "Be brief.")
    with pytest.raises(ValueError, match="unknown key epoch"):
        runspec.trainer_config(Config, {"config": {"epoch": 2}})


def test_the_operator_only_keys_are_no_kind_s_request_fields():
    for kind, fields in runspec.RUN_FIELDS.items():
        assert not set(fields) & set(runspec.OPERATOR_ONLY), kind
    assert set(runspec.RUN_FIELDS) == set(plan.RUN_KINDS)
