"""bench/dpo_recipe.py on a tiny policy: the evaluation pairs never share a prompt with the training
pairs, a recipe that cannot move the policy scores exactly 1/2 and no gain, one that learns the
preference scores above it, and bad input stops it with a message."""
from __future__ import annotations

import gzip
import json

import pytest
import torch

from bench import dpo_recipe
from tests.tiny_models import tiny_llama

torch.set_num_threads(1)


def _write(path, prompts, chosen="yes", rejected="no!"):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for p in prompts:
            f.write(json.dumps({"id": p, "prompt": p, "chosen": chosen, "rejected": rejected}) + "\n")
    return str(path)


@pytest.fixture
def files(tmp_path):
    train = _write(tmp_path / "train.jsonl.gz", [f"pick {i}" for i in range(8)])
    evaluate = _write(tmp_path / "eval.jsonl.gz", ["pick 0", "pick 1"] + [f"Choose {i}" for i in range(4)])
    return train, evaluate, str(tiny_llama(tmp_path / "policy"))


def _run(files, config, *extra):
    train, evaluate, policy = files
    return dpo_recipe.main(["--train", train, "--eval", evaluate, "--policy-base", policy, "--threads", "1",
                            "--config", json.dumps({"device": "cpu", "max_length": 32, **config}), *extra])


def test_a_recipe_that_cannot_move_the_policy_scores_one_half_and_no_gain(files):
    result = _run(files, {"lr": 0.0, "epochs": 1, "batch_size": 4, "warmup_ratio": 0.0})
    assert result["train_pairs"] == 8 and result["eval_pairs"] == 4 and result["dropped_overlap"] == 2  # "pick 0/1" trained
    assert result["implicit_reward_accuracy"] == 0.5 and result["pref_accuracy_delta"] == 0.0
    assert result["trainer_eval_implicit_reward_accuracy_end"] == 0.5 and result["target_met"] is False


def test_a_recipe_that_learns_the_preference_meets_the_target_on_unseen_prompts(files):
    torch.manual_seed(0)
    result = _run(files, {"lr": 5e-3, "epochs": 6, "batch_size": 4, "micro_batch_size": 2, "beta": 0.5,
                          "warmup_ratio": 0.0}, "--eval-pairs", "3")
    assert result["eval_pairs"] == 3 and result["implicit_reward_accuracy"] == 1.0
    assert result["pref_accuracy_policy"] == 1.0 and result["implicit_reward_accuracy_ci95"] == (1.0, 1.0)
    assert result["recipe"]["lr"] == 5e-3 and result["steps"] == 12
    assert result["target_met"] is (result["pref_accuracy_delta_ci95"][0] > 0)  # the parent may already prefer "yes"


def test_one_file_is_split_by_prompt_and_bad_input_is_refused(files, tmp_path):
    train, _, policy = files
    many = _write(tmp_path / "many.jsonl.gz", [f"prompt number {i}" for i in range(60)])
    from labeling.splits import prompt_is_held_out

    rows = [json.loads(line) for line in gzip.open(many, "rt")]
    train_side, eval_side, dropped = dpo_recipe.pairs_split(rows, rows, True, 0, 0)
    assert {r["prompt"] for r in eval_side} == {r["prompt"] for r in rows if prompt_is_held_out(r["prompt"])}
    assert not {r["prompt"] for r in eval_side} & {r["prompt"] for r in train_side} and dropped == 0
    with pytest.raises(SystemExit, match="--config: .*unexpected keyword argument 'epoch'"):
        _run(files, {"epoch": 2})
    with pytest.raises(SystemExit, match="0 training and 0 evaluation pairs|evaluation pairs: both must be non-empty"):
        dpo_recipe.main(["--train", train, "--eval", train, "--policy-base", policy, "--train-pairs", "8"])
