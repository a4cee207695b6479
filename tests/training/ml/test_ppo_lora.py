"""PPO with LoRA: adapters train on the frozen parent, the reference is the policy with its adapters
disabled (no second copy), the value model shares the frozen weights, gradient checkpointing keeps
the rollout's KV cache, and the run is saved as an adapter folder on its parent."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.tiny_models import tiny_llama
from tests.training.ml.test_ppo import make_reward_model
from training.ml import ppo
from training.ml.lora import BASE_FILE, adapters_disabled, is_adapter_dir, is_lora
from training.ml.ppo import PPOConfig, build_value_model, train_ppo
from training.ml.reward.artifact import load_reward_model
from training.ml.text import load_policy, position_ids, token_logprobs

torch.set_num_threads(1)

PROMPTS = [f"q{i}" for i in range(8)]


def lora_config(**overrides: Any) -> PPOConfig:
    values = dict(iterations=2, rollout_batch_size=8, mini_batch_size=4, micro_batch_size=2, ppo_epochs=2, max_new_tokens=6,
                  lr=3e-2, value_lr=3e-3, precision="fp32", seed=0, lora_r=4, lora_alpha=8)
    return PPOConfig(**(values | overrides))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ppo_lora")
    torch.manual_seed(0)
    policy = tiny_llama(root / "policy")
    return policy, make_reward_model(root / "rm", policy)


def keep_saved_policy(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Spy on ppo.save_policy: the trained model object as it is in memory at the end of the run."""
    seen: dict[str, Any] = {}
    original = ppo.save_policy

    def spy(model, *args, **kwargs):
        seen["model"] = model
        return original(model, *args, **kwargs)

    monkeypatch.setattr(ppo, "save_policy", spy)
    return seen


def logps(model: torch.nn.Module, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return token_logprobs(model(input_ids=ids, attention_mask=attention, position_ids=position_ids(attention)).logits, ids)


def test_lora_ppo_trains_only_adapters_and_saves_an_adapter_folder_on_its_parent(models, tmp_path: Path, monkeypatch) -> None:
    policy_dir, rm_dir = models
    seen = keep_saved_policy(monkeypatch)
    out = tmp_path / "out"
    # value_init="policy": the value model shares the policy's frozen weights, so its training must leave them alone too.
    metrics = train_ppo(policy_dir, rm_dir, PROMPTS, out, lora_config(value_init="policy"))
    assert metrics["value_init"] == "policy"

    # The folder holds adapters only and names its parent.
    assert is_adapter_dir(out) and not (out / "model.safetensors").exists()
    assert json.loads((out / BASE_FILE).read_text())["base"] == str(policy_dir.resolve())
    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in adapter.items())  # B starts at 0: it moved

    # In memory, every weight of the parent is exactly as loaded; only the adapters differ.
    parent, _ = load_policy(policy_dir)
    parent_params = dict(parent.named_parameters())
    trained = seen["model"]
    assert is_lora(trained)
    base = {n.removeprefix("base_model.model.").replace(".base_layer", ""): p
            for n, p in trained.named_parameters() if "lora_" not in n}
    assert base.keys() == parent_params.keys()
    assert all(torch.equal(base[n].detach().cpu(), parent_params[n].detach()) for n in base)
    assert not any(p.requires_grad for p in base.values())

    # The version loads as one model (adapter merged onto its parent) that is not the parent.
    merged, _ = load_policy(out)
    assert not is_lora(merged)
    ids = torch.tensor([[8, 20, 30, 40, 50, 60, 70]])
    attention = torch.ones_like(ids)
    assert not torch.allclose(logps(merged, ids, attention), logps(parent, ids, attention), atol=1e-4)
    trained.eval()
    assert torch.allclose(logps(merged, ids, attention), logps(trained, ids, attention), atol=1e-5)


def test_lora_reference_is_the_policy_with_adapters_disabled_not_a_second_copy(models, tmp_path: Path, monkeypatch) -> None:
    policy_dir, rm_dir = models
    loads: list[Path] = []
    original_load = ppo.load_policy
    monkeypatch.setattr(ppo, "load_policy", lambda path, *a, **k: (loads.append(Path(path)), original_load(path, *a, **k))[1])
    rollouts: list[tuple[Any, Any, dict[str, torch.Tensor]]] = []
    original_rollout = ppo.rollout

    def rollout_spy(policy, ref, *args, **kwargs):
        data = original_rollout(policy, ref, *args, **kwargs)
        rollouts.append((policy, ref, {k: v.clone() for k, v in data.items()}))
        return data

    monkeypatch.setattr(ppo, "rollout", rollout_spy)
    train_ppo(policy_dir, rm_dir, PROMPTS, None, lora_config())
    assert loads == [policy_dir]  # the policy only: no reference copy
    assert len(rollouts) == 2 and all(ref is None for _, ref, _ in rollouts)

    parent, _ = original_load(policy_dir)
    parent.eval()
    policy, _, data = rollouts[-1]  # the second rollout: the adapters have been trained once already
    policy.eval()
    ids, attention = data["input_ids"], data["attention_mask"]
    real = attention[:, 1:].bool()
    parent_logps = logps(parent, ids, attention)
    # The rollout's reference log-probs are the parent's...
    assert torch.allclose(data["ref_logprobs"][real], parent_logps[real], atol=1e-5)
    # ...while the policy it sampled from is not the parent any more (else the check above proves nothing).
    assert (data["logprobs"][real] - parent_logps[real]).abs().max() > 1e-3
    # After training, the policy with its adapters off is still exactly the parent.
    fixed = torch.tensor([[8, 20, 30, 40, 50, 60, 70]])
    with adapters_disabled(policy):
        assert torch.allclose(logps(policy, fixed, torch.ones_like(fixed)), logps(parent, fixed, torch.ones_like(fixed)), atol=1e-5)
    assert not torch.allclose(logps(policy, fixed, torch.ones_like(fixed)), logps(parent, fixed, torch.ones_like(fixed)), atol=1e-4)


def test_lora_trains_a_small_fraction_of_the_parameters(models) -> None:
    policy_dir, rm_dir = models
    lora = train_ppo(policy_dir, rm_dir, PROMPTS, None, lora_config(iterations=1))
    full = train_ppo(policy_dir, rm_dir, PROMPTS, None, lora_config(iterations=1, lora_r=0))
    parent, _ = load_policy(policy_dir)
    parent_total = sum(p.numel() for p in parent.parameters())
    a = lora["adaptation"]
    assert a["lora_r"] == 4
    assert a["total_parameters"] == parent_total + a["trainable_parameters"]  # parent + adapters, nothing copied
    assert 0 < a["trainable_parameters"] < 0.2 * a["total_parameters"]
    assert full["adaptation"]["trainable_parameters"] == full["adaptation"]["total_parameters"] == parent_total
    # The value model trains its adapters and head only; without LoRA it trains a whole backbone.
    assert 0 < lora["value_adaptation"]["trainable_parameters"] < 0.2 * lora["value_adaptation"]["total_parameters"]
    assert full["value_adaptation"]["trainable_parameters"] == full["value_adaptation"]["total_parameters"]


@pytest.mark.parametrize("value_init", ["policy", "reward"])
def test_lora_value_model_shares_the_frozen_backbone_and_trains_its_own_adapters(models, value_init: str) -> None:
    policy_dir, rm_dir = models
    policy, tokenizer = load_policy(policy_dir)
    reward_model, rm_tokenizer, _ = load_reward_model(rm_dir)
    reward_model.requires_grad_(False)
    source = {"policy": policy, "reward": reward_model}[value_init]
    source_tensors = {p.data_ptr() for p in source.parameters()}

    value, init = build_value_model(lora_config(value_init=value_init), policy, reward_model, rm_tokenizer, tokenizer)
    assert init == value_init
    frozen = [(n, p) for n, p in value.named_parameters() if not p.requires_grad]
    trainable = [n for n, p in value.named_parameters() if p.requires_grad]
    assert frozen and all(p.data_ptr() in source_tensors for _, p in frozen)  # the same weights, not a copy
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    assert any(n.startswith("head.") for n in trainable)

    # Without LoRA the value model is a separate copy that trains whole (also from a frozen RM).
    value, _ = build_value_model(lora_config(value_init=value_init, lora_r=0), policy, reward_model, rm_tokenizer, tokenizer)
    assert all(p.requires_grad for p in value.parameters())
    assert not any(p.data_ptr() in source_tensors for p in value.parameters())


def test_gradient_checkpointing_keeps_the_rollout_kv_cache_and_changes_nothing(models, monkeypatch) -> None:
    policy_dir, rm_dir = models
    calls: list[dict[str, Any]] = []
    original_sample = ppo.sample

    def sample_spy(model, *args, **kwargs):
        layers = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
        lengths: list[int] = []
        hooks = [layer.register_forward_pre_hook(
            lambda m, a, k: lengths.append((a[0] if a else k["hidden_states"]).shape[1]), with_kwargs=True) for layer in layers[:1]]
        try:
            out = original_sample(model, *args, **kwargs)
        finally:
            for h in hooks:
                h.remove()
        calls.append({"checkpointing": all(getattr(layer, "gradient_checkpointing", False) for layer in layers), "lengths": lengths})
        return out

    monkeypatch.setattr(ppo, "sample", sample_spy)
    checkpointed = train_ppo(policy_dir, rm_dir, PROMPTS, None, lora_config(gradient_checkpointing=True))
    assert checkpointed["adaptation"]["gradient_checkpointing"] is True
    assert len(calls) == 2 and all(c["checkpointing"] for c in calls)
    # With the cache, only the prompt is read whole; every later step feeds one new token.
    assert all(len(c["lengths"]) > 1 and c["lengths"][0] > 1 and set(c["lengths"][1:]) == {1} for c in calls)

    plain = train_ppo(policy_dir, rm_dir, PROMPTS, None, lora_config(gradient_checkpointing=False))
    for a, b in zip(checkpointed["history"], plain["history"], strict=True):
        assert a.keys() == b.keys()
        assert all(a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6) for k in a)


def test_lora_ppo_starts_at_ratio_one_so_target_kl_measures_only_real_updates(models) -> None:
    policy_dir, rm_dir = models
    assert PPOConfig().lora_dropout == 0.0  # PPO's own default; dropout would make pi differ from the sampler's pi_old
    capped = train_ppo(policy_dir, rm_dir, PROMPTS, None, lora_config(mini_batch_size=2, ppo_epochs=3, target_kl=1e-6))
    # As without LoRA: the first step measures KL 0 and updates, the second sees that update and stops.
    assert all(h["stopped_early"] and h["optimizer_steps"] == 1 for h in capped["history"])
