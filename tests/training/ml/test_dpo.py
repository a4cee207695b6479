from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.tiny_models import tiny_llama
from training.ml.dpo import DPOConfig, dpo_loss, train_dpo

torch.set_num_threads(1)
PAIRS = [{"prompt": f"pick {i}", "chosen": "yes", "rejected": "no!"} for i in range(8)]


def test_dpo_loss_matches_hand_computation() -> None:
    beta = 0.5
    pc, pr, rc, rr = [-4.0, -2.0], [-6.0, -1.0], [-5.0, -2.0], [-5.0, -3.0]
    loss, chosen, rejected = dpo_loss(*(torch.tensor(x) for x in (pc, pr, rc, rr)), beta=beta)
    # pair 0: r_w = 0.5*(-4+5) = 0.5, r_l = 0.5*(-6+5) = -0.5, margin 1
    # pair 1: r_w = 0.5*(-2+2) = 0,   r_l = 0.5*(-1+3) = 1,    margin -1
    expected = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(1.0))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert chosen.tolist() == pytest.approx([0.5, 0.0])
    assert rejected.tolist() == pytest.approx([-0.5, 1.0])


def test_dpo_loss_is_log2_when_policy_equals_reference() -> None:
    x = torch.tensor([-3.0, -7.0])
    loss, _, _ = dpo_loss(x, x + 1, x, x + 1, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2))


def test_training_learns_the_preference_and_saves(tmp_path: Path) -> None:
    torch.manual_seed(0)
    parent = tiny_llama(tmp_path / "parent")
    config = DPOConfig(beta=0.5, epochs=6, lr=5e-3, batch_size=4, micro_batch_size=2, warmup_ratio=0.0, precision="fp32")
    metrics = train_dpo(parent, PAIRS, tmp_path / "out", config)
    history = metrics["history"]
    assert history[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at step 1
    assert history[-1]["loss"] < 0.3
    assert history[-1]["chosen_reward"] > history[-1]["rejected_reward"]
    before, after = load_file(str(parent / "model.safetensors")), load_file(str(tmp_path / "out" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    saved = json.loads((tmp_path / "out" / "pairwise_config.json").read_text())
    assert saved["kind"] == "DPOConfig" and saved["values"]["beta"] == 0.5


def test_response_logps_from_kept_columns_equal_the_full_forward(tmp_path: Path) -> None:
    """sequence_token_logprobs makes logits only where some row has a response token; the result is
    the full forward's, response token for response token, gradients included."""
    from training.ml.text import (
        accepts_logits_to_keep, collate, encode_example, load_policy, sequence_token_logprobs, token_logprobs,
    )

    model, tokenizer = load_policy(tiny_llama(tmp_path / "policy"))
    assert accepts_logits_to_keep(model)
    rows = [encode_example(tokenizer, "a much longer prompt that goes on and on?", "yes", 64, ""),
            encode_example(tokenizer, "short?", "a longer answer than the other", 64, "")]
    batch = collate(rows, tokenizer.pad_token_id)
    kept, mask = sequence_token_logprobs(model, batch)
    full = token_logprobs(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                position_ids=(batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)).logits, batch["input_ids"])
    assert mask.sum() == sum(len(ids) - n_prompt for ids, n_prompt in rows)  # every response token scored
    assert torch.allclose(kept, full * mask, atol=1e-5) and (kept[mask == 0] == 0).all()
    (kept.sum()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_the_default_recipe_is_the_measured_one() -> None:
    """bench/loop_quality.py measured these defaults (README, Benchmarks); the help text says why."""
    import dataclasses

    config = DPOConfig()
    assert (config.lr, config.beta, config.epochs, config.batch_size, config.max_length) == (3e-5, 0.1, 2, 8, 160)
    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(DPOConfig)}
    # Reasons in words and a pointer to the figures, never the figures themselves (they go stale: issue 28).
    assert "bench/loop_quality.py" in helps["epochs"] and "135M" in helps["lr"] and "CPU" in helps["max_length"]
    assert not any(re.search(r"\d\.\d\d|%|win rate", helps[name]) for name in ("beta", "epochs", "lr", "batch_size", "max_length"))


def test_held_out_pairs_are_measured_at_the_start_every_interval_and_the_end(tmp_path: Path) -> None:
    """TRL's rewards/accuracies on an eval set: 1/2 at the start (the policy is its reference), then whether
    the policy learned the preference on pairs no step trained on, not only the training pairs."""
    torch.manual_seed(0)
    parent = tiny_llama(tmp_path / "parent")
    held = [{"prompt": f"choose {i}", "chosen": "yes", "rejected": "no!"} for i in range(4)]
    config = DPOConfig(beta=0.5, epochs=6, lr=5e-3, batch_size=4, micro_batch_size=2, warmup_ratio=0.0, eval_every=4)
    points = []
    metrics = train_dpo(parent, PAIRS, None, config, progress=lambda fraction, row: points.append((fraction, row)),
                        eval_pairs=held)
    assert points[0] == (0.0, {"step": 0, "eval_implicit_reward_accuracy": 0.5, "eval_implicit_margin": 0.0,
                               "eval_pref_accuracy": points[0][1]["eval_pref_accuracy"]})
    measured = [row["step"] for row in metrics["history"] if "eval_implicit_reward_accuracy" in row]
    assert measured == [4, 8, 12]  # every 4 of the 12 steps, the last included
    assert metrics["eval_pairs"] == 4 and metrics["eval_implicit_reward_accuracy_start"] == 0.5
    assert metrics["eval_implicit_reward_accuracy_end"] == 1.0 and metrics["eval_implicit_margin_end"] > 0
    assert metrics["eval_pref_accuracy_end"] == 1.0 and metrics["steps"] == 12
    assert "eval_pairs" not in train_dpo(parent, PAIRS[:4], None, DPOConfig(epochs=1, batch_size=4))  # none given: none measured
