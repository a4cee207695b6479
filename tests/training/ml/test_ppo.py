from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.tiny_models import tiny_llama
from training.ml.ppo import PPOConfig, approx_kl, gae_advantages, kl_penalized_rewards, ppo_policy_loss, train_ppo, value_loss, whiten
from training.ml.reward.artifact import save_reward_model
from training.ml.reward.config import RewardConfig
from training.ml.reward.model import RewardModel
from transformers import AutoTokenizer

torch.set_num_threads(1)


def test_kl_penalty_per_token_plus_score_on_last_response_token() -> None:
    logprobs = torch.tensor([[0.0, -1.0, -2.0, -3.0], [-1.0, -1.0, -1.0, 0.0]])
    ref = torch.tensor([[0.0, -2.0, -1.0, -3.0], [-1.0, -0.5, -1.0, 0.0]])
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1]])
    rewards = kl_penalized_rewards(torch.tensor([3.0, -1.0]), logprobs, ref, mask, beta=0.1)
    # row 0: t1 -0.1*(-1+2) = -0.1; t2 -0.1*(-2+1) = +0.1, + score 3 -> 3.1; prompt/pad stay 0
    # row 1: t1 -0.1*(-1+0.5) = +0.05; t2 0; t3 0 + score -1
    expected = torch.tensor([[0.0, -0.1, 3.1, 0.0], [0.0, 0.05, 0.0, -1.0]])
    assert torch.allclose(rewards, expected, atol=1e-6)


def test_gae_with_no_discount_matches_hand_computation() -> None:
    rewards = torch.tensor([[0.0, 0.5, -0.2, 1.0, 0.0]])
    values = torch.tensor([[9.0, 1.0, 2.0, 3.0, 9.0]])  # 9s sit outside the response: ignored
    mask = torch.tensor([[0, 1, 1, 1, 0]])
    adv, ret = gae_advantages(rewards, values, mask, gamma=1.0, lam=0.5)
    # delta_3 = 1 - 3 = -2;  delta_2 = -0.2 + 3 - 2 = 0.8;  delta_1 = 0.5 + 2 - 1 = 1.5
    # A_3 = -2;  A_2 = 0.8 + 0.5*(-2) = -0.2;  A_1 = 1.5 + 0.5*(-0.2) = 1.4
    assert torch.allclose(adv, torch.tensor([[0.0, 1.4, -0.2, -2.0, 0.0]]), atol=1e-6)
    assert torch.allclose(ret, torch.tensor([[0.0, 2.4, 1.8, 1.0, 0.0]]), atol=1e-6)
    # lam = 1, gamma = 1: the advantage is the remaining return minus the value
    adv1, _ = gae_advantages(rewards, values, mask, gamma=1.0, lam=1.0)
    assert torch.allclose(adv1, torch.tensor([[0.0, 1.3 - 1.0, 0.8 - 2.0, 1.0 - 3.0, 0.0]]), atol=1e-6)


def test_clipped_policy_loss_matches_hand_computation() -> None:
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.7]]))
    adv = torch.tensor([[1.0, 1.0, -2.0, -1.0]])
    mask = torch.tensor([[1, 1, 1, 1]])
    loss, clip_fraction = ppo_policy_loss(new, old, adv, mask, clip=0.2)
    # per token max(-A*r, -A*clip(r)): ratio 1.5,A=1 -> max(-1.5,-1.2) = -1.2 (clipped)
    # 0.5,A=1 -> max(-0.5,-0.8) = -0.5;  1.1,A=-2 -> max(2.2,2.2) = 2.2;  0.7,A=-1 -> max(0.7,0.8) = 0.8 (clipped)
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 2.2 + 0.8) / 4, abs=1e-6)
    assert clip_fraction.item() == pytest.approx(0.5)
    # masked tokens do not count
    loss_m, _ = ppo_policy_loss(new, old, adv, torch.tensor([[1, 1, 0, 0]]), clip=0.2)
    assert loss_m.item() == pytest.approx((-1.2 - 0.5) / 2, abs=1e-6)


def test_approx_kl_matches_hand_computation() -> None:
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[2.0, 0.5, 1.0]]))
    # per token r - 1 - log r:  2 -> 1 - ln 2;  0.5 -> -0.5 + ln 2;  1 -> 0
    import math
    assert approx_kl(new, old, torch.ones(1, 3)).item() == pytest.approx((1 - math.log(2) - 0.5 + math.log(2)) / 3, abs=1e-6)
    assert approx_kl(new, old, torch.tensor([[1, 0, 0]])).item() == pytest.approx(1 - math.log(2), abs=1e-6)
    assert approx_kl(old, old, torch.ones(1, 3)).item() == 0


def test_clipped_value_loss_matches_hand_computation() -> None:
    values = torch.tensor([[1.0, 0.0]])
    old = torch.tensor([[0.5, 0.0]])
    returns = torch.tensor([[2.0, 1.0]])
    loss = value_loss(values, old, returns, torch.tensor([[1, 1]]), clip=0.2)
    # t0: clipped V = 0.7, max((1-2)^2, (0.7-2)^2) = 1.69;  t1: max(1, 1) = 1
    assert loss.item() == pytest.approx(0.5 * (1.69 + 1.0) / 2, abs=1e-6)


def test_whiten_uses_only_masked_entries() -> None:
    x = torch.tensor([[100.0, 1.0, 3.0]])
    out = whiten(x, torch.tensor([[0, 1, 1]]))
    assert torch.allclose(out, torch.tensor([[0.0, -1.0, 1.0]]), atol=1e-4)


def make_reward_model(path: Path, policy: Path) -> Path:
    """A decoder RM on the policy's vocabulary (so the value model is initialised from it) whose
    head is steered to like one direction of the last hidden state: a learnable target."""
    torch.manual_seed(1)
    model = RewardModel.from_backbone_path(policy, pooling="last")
    with torch.no_grad():
        model.head.weight.mul_(20.0)
    save_reward_model_dir = path
    save_reward_model_dir.mkdir()
    save_reward_model(save_reward_model_dir, model, AutoTokenizer.from_pretrained(policy), RewardConfig(base_model=str(policy), pooling="last"))
    return path


def test_ppo_raises_reward_changes_weights_and_saves(tmp_path: Path) -> None:
    torch.manual_seed(0)
    policy = tiny_llama(tmp_path / "policy")
    rm = make_reward_model(tmp_path / "rm", policy)
    prompts = [f"q{i}" for i in range(8)]
    demos = [{"prompt": "q", "response": "a"}]
    config = PPOConfig(
        iterations=8, rollout_batch_size=8, mini_batch_size=4, micro_batch_size=2, ppo_epochs=2, max_new_tokens=6,
        lr=3e-3, value_lr=3e-3, ptx_coef=0.1, precision="fp32", seed=0,
    )
    seen = []
    metrics = train_ppo(policy, rm, prompts, tmp_path / "out", config, progress=lambda f, m: seen.append(m), demonstrations=demos)
    scores = [h["score"] for h in metrics["history"]]
    assert metrics["value_init"] == "reward"
    assert sum(scores[-2:]) / 2 > sum(scores[:2]) / 2
    assert len(seen) == 8 and all(h["ptx_loss"] > 0 for h in metrics["history"])
    before, after = load_file(str(policy / "model.safetensors")), load_file(str(tmp_path / "out" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    saved = json.loads((tmp_path / "out" / "pairwise_config.json").read_text())
    assert saved["values"]["beta"] == 0.02 and "KL" in saved["help"]["beta"]


def test_target_kl_stops_the_epochs_of_an_iteration_early(tmp_path: Path) -> None:
    torch.manual_seed(0)
    policy = tiny_llama(tmp_path / "policy")
    rm = make_reward_model(tmp_path / "rm", policy)
    common = dict(iterations=2, rollout_batch_size=8, mini_batch_size=2, micro_batch_size=2, ppo_epochs=3,
                  max_new_tokens=6, lr=3e-2, value_lr=3e-3, precision="fp32", seed=0)
    free = train_ppo(policy, rm, ["a", "b", "c", "d", "e", "f", "g", "h"], None, PPOConfig(**common))
    capped = train_ppo(policy, rm, ["a", "b", "c", "d", "e", "f", "g", "h"], None, PPOConfig(**common, target_kl=1e-6))
    assert [h["optimizer_steps"] for h in free["history"]] == [12, 12]
    assert not any(h["stopped_early"] for h in free["history"])
    # The first step measures KL 0 (nothing has moved yet), the second sees the first update's KL.
    assert all(h["stopped_early"] and h["optimizer_steps"] == 1 for h in capped["history"])
