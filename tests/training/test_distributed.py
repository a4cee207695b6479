"""Two processes (torchrun, gloo, on the CPU) train on the same global batches as one process and take
the same optimizer steps: the logged losses agree to 1e-4 at every step, and rank 0 alone saves."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from tests.tiny_models import tiny_llama
from training.ml.dpo import DPOConfig, train_dpo
from training.ml.launch import launch_command
from training.ml.reward.artifact import load_reward_model, score
from training.ml.reward.config import RewardConfig
from training.ml.reward.loop import train_reward_model
from training.ml.sft import SFTConfig, response_nll_sum, train_sft
from training.ml.text import collate, encode_example, load_policy

ROOT = Path(__file__).resolve().parents[2]
# 9 pairs in steps of 4: the last step has one pair, so one rank trains on nothing and must still
# join the all-reduce (training.ml.distributed.Ranks.shard).
PAIRS = [{"prompt": f"pick {i}", "chosen": "yes" if i % 2 else "sure", "rejected": "no!" if i % 3 else "never"} for i in range(9)]


def run_group(tmp_path: Path, trainer: str, processes: int, **job) -> dict:
    data = tmp_path / f"{trainer}-data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in job.pop("rows")))
    job_path = tmp_path / f"{trainer}-job.json"
    result, progress = tmp_path / f"{trainer}-result.json", tmp_path / f"{trainer}-progress.jsonl"
    job_path.write_text(json.dumps({"trainer": trainer, "data": str(data), "result": str(result), "progress": str(progress), **job}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(launch_command(job_path=job_path, processes=processes, gpu=False), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in progress.read_text().splitlines()]
    metrics = json.loads(result.read_text())
    # rank 0 alone reports progress, once per step (and a trainer may add a final summary without "step")
    assert sum("step" in line["metrics"] for line in lines) == len(metrics["history"])
    return metrics


def assert_same_steps(alone: dict, group: dict, keys: tuple[str, ...]) -> None:
    """Every step's logged values agree: losses and accuracies to 1e-4, gradient norms to 1e-3 relative."""
    for one, two in zip(alone["history"], group["history"]):
        for key in keys:
            tolerance = {"rel": 1e-3, "abs": 1e-5} if key == "grad_norm" else {"abs": 1e-4}
            assert two[key] == pytest.approx(one[key], **tolerance), (key, one, two)


@pytest.mark.parametrize("lora_r", [0, 4])
def test_two_processes_take_the_same_dpo_steps_as_one(tmp_path: Path, lora_r: int) -> None:
    torch.manual_seed(0)
    parent = tiny_llama(tmp_path / "parent")
    config = dict(beta=0.5, epochs=2, lr=5e-3, batch_size=4, micro_batch_size=1, warmup_ratio=0.0, precision="fp32",
                  device="cpu", lora_r=lora_r, lora_alpha=8, lora_dropout=0.0)  # dropout draws differ per rank
    torch.set_num_threads(1)
    alone = train_dpo(parent, PAIRS, tmp_path / "alone", DPOConfig(**config))
    group = run_group(tmp_path, "dpo", 2, rows=PAIRS, parent_dir=str(parent), out_dir=str(tmp_path / "group"), config=config)
    assert group["processes"] == 2 and alone["processes"] == 1 and group["steps"] == alone["steps"] == 6
    assert_same_steps(alone, group, ("loss", "accuracy", "grad_norm"))
    assert alone["history"][-1]["loss"] < alone["history"][0]["loss"]  # it trained, so the steps mattered
    assert (tmp_path / "group").is_dir() and not list(tmp_path.glob(".tmp-group-*"))  # saved once, whole


# 9 demonstrations in steps of 4, as the pairs above (one rank has nothing in the last step); responses of
# different lengths, so a rank's share of a step's response tokens is not its share of the examples.
DEMOS = [{"prompt": f"say hi {i}", "response": "hi" + " there" * (i % 4) + "!" * (i % 3)} for i in range(9)]


def demo_nll(folder: Path) -> float:
    """Mean response-token cross-entropy of the saved policy on DEMOS."""
    model, tokenizer = load_policy(folder)
    encoded = [encode_example(tokenizer, d["prompt"], d["response"], 96) for d in DEMOS]
    with torch.no_grad():
        total = response_nll_sum(model.eval(), collate(encoded, tokenizer.pad_token_id)).item()
    return total / sum(len(ids) - n_prompt for ids, n_prompt in encoded)


@pytest.mark.parametrize("lora_r", [0, 4])
def test_two_processes_take_the_same_sft_steps_as_one(tmp_path: Path, lora_r: int) -> None:
    torch.manual_seed(0)
    parent = tiny_llama(tmp_path / "parent")
    config = dict(epochs=2, lr=5e-3, batch_size=4, micro_batch_size=1, warmup_ratio=0.0, precision="fp32", device="cpu",
                  max_length=96, lora_r=lora_r, lora_alpha=8, lora_dropout=0.0)  # dropout draws differ per rank
    torch.set_num_threads(1)
    alone = train_sft(parent, DEMOS, tmp_path / "alone", SFTConfig(**config))
    group = run_group(tmp_path, "sft", 2, rows=DEMOS, parent_dir=str(parent), out_dir=str(tmp_path / "group"), config=config)
    assert group["processes"] == 2 and alone["processes"] == 1 and group["steps"] == alone["steps"] == 6
    assert_same_steps(alone, group, ("loss", "grad_norm"))
    assert alone["history"][-1]["loss"] < alone["history"][0]["loss"]  # it trained, so the steps mattered
    assert group["adaptation"] == alone["adaptation"] and group["examples"] == alone["examples"] == 9
    assert not list(tmp_path.glob(".tmp-group-*"))  # saved once, whole
    # Rank 0 saved the trained model (unwrapped from DDP; LoRA adapters on the parent): it fits as well as alone's.
    fits = [demo_nll(tmp_path / name) for name in ("parent", "alone", "group")]
    assert fits[2] == pytest.approx(fits[1], abs=1e-4) and fits[1] < fits[0]


# 7 ranked groups of 2 to 4 responses in micro-batches of 2, two per step: each epoch's micro-batches hold
# 2, 2, 2 and 1 judgments, so a micro-batch of one leaves a rank with nothing (a zero-weighted filler),
# and a step whose micro-batches differ in size checks that each rank's loss is weighed by its share.
GROUPS = [
    {"prompt": f"question {i}?", "responses": [f"yes, glad to help with {i}!", f"no. {i}", "meh", "whatever you like"][: 2 + i % 3],
     "ranking": [[0], [1]] if i % 3 == 0 else [[0], [1, 2]] if i % 3 == 1 else [[0], [2], [1, 3]]}
    for i in range(7)
]
VAL_GROUPS = [{"prompt": "question 99?", "responses": ["yes, glad to help with 99!", "no. 99", "meh"], "ranking": [[0], [1], [2]]}]


@pytest.mark.parametrize("lora_r", [0, 4])
def test_two_processes_take_the_same_reward_steps_as_one(tmp_path: Path, tiny_reward_base: Path, lora_r: int) -> None:
    config = dict(base_model=str(tiny_reward_base), max_length=48, batch_size=2, grad_accum=2, epochs=2, lr=5e-3,
                  warmup_fraction=0.0, precision="fp32", device="cpu", lora_r=lora_r, lora_alpha=8,
                  lora_dropout=0.0)  # dropout draws differ per rank
    torch.set_num_threads(1)
    alone = train_reward_model(GROUPS, RewardConfig(**config), tmp_path / "alone", val_groups=VAL_GROUPS)
    val_data = tmp_path / "val.jsonl"
    val_data.write_text("".join(json.dumps(g) + "\n" for g in VAL_GROUPS))
    group = run_group(tmp_path, "reward", 2, rows=GROUPS, out_dir=str(tmp_path / "group"), config=config,
                      val_data=str(val_data))
    assert group["processes"] == 2 and alone["processes"] == 1
    assert len(group["history"]) == len(alone["history"]) == 4
    assert_same_steps(alone, group, ("loss", "accuracy", "grad_norm"))
    # Every step moved the weights (four steps over different groups are too few for the loss to fall
    # reliably; the per-step losses above differ from step to step, so the match is not vacuous).
    assert all(h["grad_norm"] > 1e-6 for h in alone["history"]) and len({round(h["loss"], 6) for h in alone["history"]}) > 1
    for key in ("val_log_loss", "val_accuracy"):  # the same model, evaluated the same way
        assert group[key] == pytest.approx(alone[key], abs=1e-4), key
    assert group["groups"] == alone["groups"] == 7 and group["val_comparisons"] == alone["val_comparisons"] == 3
    assert (tmp_path / "group" / "metrics.json").is_file() and not list(tmp_path.glob(".tmp-group-*"))  # saved once, whole
    assert json.loads((tmp_path / "group" / "metrics.json").read_text())["processes"] == 2
    # The saved folders score alike once normalised. Not the "bias" metric itself: the loss reads only
    # differences of rewards, so the head's own bias gets a gradient of float noise, which AdamW turns
    # into steps of about lr whose sign depends on summation order; the normalisation cancels them.
    prompts = [g["prompt"] for g in GROUPS + VAL_GROUPS for _ in g["responses"]]
    responses = [r for g in GROUPS + VAL_GROUPS for r in g["responses"]]
    scores = [score(*load_reward_model(tmp_path / name)[:2], prompts, responses, max_length=48) for name in ("alone", "group")]
    assert scores[1] == pytest.approx(scores[0], abs=1e-4)
