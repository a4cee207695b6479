"""PPO against a reward model, as in InstructGPT (Ouyang et al. 2022, section 3.5, appendix C.4).

One iteration:
  1. rollout   sample a response per prompt from the policy at temperature 1
  2. score     the normalised reward model scores each (prompt, response)
  3. penalise  per-token reward -beta * (log pi(y_t) - log pi_ref(y_t)), plus the RM score on the
               last response token: a bandit episode whose return is r(x, y) - beta * KL
  4. advantage GAE over the response tokens with no discount (gamma = 1)
  5. optimise  a few epochs of the clipped policy loss plus the clipped value loss on the
               rollout batch, optionally plus gamma_ptx * LM loss on demonstrations (PPO-ptx)

Every tensor below is laid out per *action*: position t scores the token at sequence position t+1
(what `token_logprobs` returns), and `mask` is 1 on response tokens, 0 on prompt and padding.

Value model. The paper initialises the value function from the RM. Here the value model is a
separate copy of the RM's backbone and head, read at every position instead of only the last:
V(s_t) = head(h_t) + bias. That needs the RM to read the policy's own tokens causally, i.e. a
decoder backbone with the policy's vocabulary. When the RM is an encoder or uses another tokenizer
(e.g. MiniLM), its per-position states would see the future tokens or not line up with the
policy's, so the value model is then the policy's backbone with a zero-initialised head
(value_init="policy"); the metrics record which one ran.

LoRA (lora_r > 0). The policy trains adapters on its frozen parent, so the parent is the policy
with its adapters switched off: the reference log-probs come from the policy itself under
`adapters_disabled`, and no second copy of the weights is loaded. The value model shares the
backbone too: its backbone is a second module tree over the *same* frozen Parameter objects (of
the policy, or of the RM for value_init="reward"), with its own LoRA adapters on top, and a
trainable head. So the weights sit in memory once, and only adapters and the head get gradients
and optimizer state. The value keeps adapters of its own rather than reading the policy's hidden
states: with shared adapters the value loss would move the policy (and the policy loss the value),
its separate learning rate and gradient clipping would mean nothing, and the clipped PPO ratio
would no longer compare the policy only with itself. The price is one more forward pass over the
frozen weights per micro-batch, the same as without LoRA.
"""
from __future__ import annotations

import contextlib
import copy
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
from transformers import PreTrainedModel

from .checkpoint import save_policy
from .common import ProgressFn, autocast, no_progress, pick_device, resolve_precision, set_seed
from .generate import decode_responses, sample
from .lora import adapters_disabled, describe, is_lora, lora_apply
from .sft import response_nll_sum
from .text import (
    PolicyConfig, Prompt, batches, collate, encode_example, load_policy, masked_mean, position_ids,
    prompt_as_transcript, to_device, token_logprobs,
)


@dataclass
class PPOConfig(PolicyConfig):
    iterations: int = field(default=10, metadata={"help": "Rollout + optimisation rounds."})
    rollout_batch_size: int = field(default=16, metadata={"help": "Prompts sampled per iteration (one response each)."})
    mini_batch_size: int = field(default=8, metadata={"help": "Rollouts per optimizer step within a PPO epoch."})
    micro_batch_size: int = field(default=4, metadata={"help": "Rollouts per forward pass; lower it to save memory."})
    ppo_epochs: int = field(default=2, metadata={"help": "Passes over each rollout batch (the paper's 'a few')."})
    max_new_tokens: int = field(default=64, metadata={"help": "Longest sampled response."})
    temperature: float = field(default=1.0, metadata={"help": "Rollout sampling temperature (1 in the paper: samples from the policy itself)."})
    beta: float = field(default=0.02, metadata={"help": "Per-token KL penalty coefficient against the frozen SFT policy (paper: 0.02)."})
    gamma: float = field(default=1.0, metadata={"help": "Discount; 1 = no discount, as in the paper."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})
    clip: float = field(default=0.2, metadata={"help": "PPO ratio clip (paper: 0.2); also clips value updates."})
    target_kl: float = field(default=0.0, metadata={"help": "Stop an iteration's remaining PPO epochs once the approximate KL between the updated and the rollout policy passes 1.5x this (0 = never stop early). Guards against one bad batch moving the policy far."})
    vf_coef: float = field(default=0.5, metadata={"help": "Weight of the value loss."})
    ptx_coef: float = field(default=0.0, metadata={"help": "gamma for PPO-ptx: weight of the LM loss on demonstrations (paper: 27.8; 0 = plain PPO)."})
    lr: float = field(default=1e-6, metadata={"help": "Policy AdamW learning rate."})
    value_lr: float = field(default=1e-5, metadata={"help": "Value model AdamW learning rate."})
    value_init: str = field(default="auto", metadata={"help": "'reward' (copy of the RM), 'policy' (policy backbone, zero head) or 'auto' (reward when the RM is a decoder sharing the policy's vocabulary)."})
    rm_max_length: int = field(default=256, metadata={"help": "Tokens the reward model reads per (prompt, response)."})
    max_length: int = field(default=512, metadata={"help": "Tokens per demonstration for the ptx term."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapters' input. 0 for PPO: with dropout the policy that is optimised is not the one that sampled, so the ratio starts away from 1 and clip and target_kl measure noise."})


# ----------------------------------------------------------------------------------------------
# Pure functions


def kl_penalized_rewards(
    scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, beta: float,
) -> torch.Tensor:
    """r_t = -beta * (log pi(y_t) - log pi_ref(y_t))  on response tokens,  + r(x, y) on the last one.

    Shape: scores [B], logprobs/ref_logprobs/mask [B, T] -> rewards [B, T] (0 where mask is 0).
    """
    mask = mask.to(logprobs.dtype)
    rewards = -beta * (logprobs - ref_logprobs) * mask
    last = last_index(mask)
    rewards[torch.arange(len(scores)), last] += scores.to(rewards.dtype)
    return rewards


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """Shape: [B, T] -> [B], the position of each row's last 1."""
    positions = torch.arange(mask.shape[1], device=mask.device)
    return (mask.long() * (positions + 1)).argmax(dim=1)


def gae_advantages(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens, computed backwards:

        delta_t = r_t + gamma * V_{t+1} - V_t          (V after the last response token is 0)
        A_t     = delta_t + gamma * lam * A_{t+1}
        R_t     = A_t + V_t                             (the value target)

    Shape: rewards, values, mask [B, T] -> (advantages [B, T], returns [B, T]), 0 where mask is 0.
    """
    mask = mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantages[:, t] = (delta + gamma * lam * next_advantage) * mask[:, t]
        # Outside the response both carry 0, so the episode ends at its last response token.
        next_value = values[:, t] * mask[:, t]
        next_advantage = advantages[:, t]
    return advantages, (advantages + values) * mask


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero mean, unit variance over the masked entries (the usual PPO advantage normalisation)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def ppo_policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped surrogate, to minimise:

        ratio_t = exp(log pi(y_t) - log pi_old(y_t))
        loss    = mean_t max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - clip, 1 + clip))

    Shape: four [B, T] tensors -> (loss [], clip_fraction []), means over masked tokens.
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    return loss, clip_fraction.detach()


def approx_kl(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(pi_old || pi) per token, estimated from the sampled tokens without bias and never negative
    (Schulman's k3 estimator): with log_ratio_t = log pi(y_t) - log pi_old(y_t),

        kl = mean_t (exp(log_ratio_t) - 1 - log_ratio_t)

    Shape: three [B, T] tensors -> [], mean over masked tokens.
    """
    log_ratio = (logprobs - old_logprobs).float()
    return masked_mean(torch.expm1(log_ratio) - log_ratio, mask).detach()


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float = 0.2,
) -> torch.Tensor:
    """Clipped value loss: a new value may not profit from moving more than `clip` from the old one.

        V_clip = old_V + clip(V - old_V, -clip, clip)
        loss   = 0.5 * mean_t max((V_t - R_t)^2, (V_clip_t - R_t)^2)

    Shape: four [B, T] tensors -> [].
    """
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


def ptx_loss(policy: nn.Module, batch: dict[str, torch.Tensor], coef: float) -> torch.Tensor:
    """PPO-ptx: coef * mean token NLL on demonstration text (the paper's gamma * pretraining term)."""
    return coef * response_nll_sum(policy, batch) / batch["response_mask"][:, 1:].sum().clamp(min=1)


# ----------------------------------------------------------------------------------------------
# Value model


class ValueModel(nn.Module):
    """backbone -> per-position hidden states -> linear head -> V(s_t) for every token."""

    def __init__(self, backbone: nn.Module, head: nn.Linear, bias: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.register_buffer("bias", torch.tensor(float(bias)))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Shape: [B, T] -> values [B, T-1]; entry t is the value of the state before token t+1."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask)).last_hidden_state
        return self.head(hidden[:, :-1].float()).squeeze(-1) + self.bias


@torch.no_grad()
def is_causal(backbone: nn.Module, vocab_size: int) -> bool:
    """Whether changing the last token leaves earlier hidden states alone. Asked of the model
    itself because saved configs do not reliably say (an RM backbone is saved as a bare model)."""
    device = next(backbone.parameters()).device
    ids = torch.arange(1, 7, device=device).unsqueeze(0) % vocab_size
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % vocab_size
    mask = torch.ones_like(ids)
    a = backbone(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
    b = backbone(input_ids=changed, attention_mask=mask).last_hidden_state[:, :-1]
    return torch.allclose(a, b, atol=1e-5)


def reward_is_causal_on_policy_tokens(reward_model: nn.Module, rm_tokenizer, policy_tokenizer) -> bool:
    same_vocab = rm_tokenizer.get_vocab() == policy_tokenizer.get_vocab()
    return same_vocab and is_causal(reward_model.backbone, len(policy_tokenizer))


def value_backbone(source: nn.Module, share_weights: bool) -> nn.Module:
    """The value model's copy of a backbone. Shared: a new module tree whose parameters are the
    source's own Parameter objects (deepcopy's memo hands them back instead of copying), for a LoRA
    run where both sides are frozen and only adapters added to the new tree train. Otherwise a full
    copy that trains whole (requires_grad set: the RM it may come from is frozen)."""
    if share_weights:
        return copy.deepcopy(source, memo={id(p): p for p in source.parameters()})
    return copy.deepcopy(source).requires_grad_(True)


def build_value_model(config: PPOConfig, policy: PreTrainedModel, reward_model: nn.Module, rm_tokenizer, policy_tokenizer) -> tuple[ValueModel, str]:
    """The value model, from the RM or from `policy` (the loaded parent, before lora_apply wraps it).
    With LoRA its backbone shares the frozen weights and gets adapters of its own (module docstring)."""
    if is_lora(policy):
        raise ValueError("build the value model from the parent, before lora_apply wraps the policy")
    init = config.value_init
    if init == "auto":
        init = "reward" if reward_is_causal_on_policy_tokens(reward_model, rm_tokenizer, policy_tokenizer) else "policy"
    share = config.lora_r > 0
    if init == "reward":
        backbone = value_backbone(reward_model.backbone, share)
        head, bias = copy.deepcopy(reward_model.head).requires_grad_(True), float(reward_model.bias)
    else:
        backbone = value_backbone(policy.base_model, share)
        head, bias = nn.Linear(backbone.config.hidden_size, 1), 0.0
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    return ValueModel(lora_apply(backbone, config, task_type="FEATURE_EXTRACTION"), head, bias), init


# ----------------------------------------------------------------------------------------------
# Rollouts


def score_responses(reward_model, rm_tokenizer, prompts: Sequence[Prompt], responses: Sequence[str], config: PPOConfig, precision: str) -> torch.Tensor:
    from .reward.artifact import score

    texts = [prompt_as_transcript(p) for p in prompts]
    return torch.tensor(score(reward_model, rm_tokenizer, texts, list(responses), config.micro_batch_size * 4, config.rm_max_length, precision))


@torch.no_grad()
def rollout(policy, ref, value_model, reward_model, rm_tokenizer, tokenizer, prompts: Sequence[Prompt], config: PPOConfig, device, precision: str) -> dict[str, torch.Tensor]:
    """Sample, score and evaluate one batch. Every [B, T-1] tensor follows the action layout.
    ref=None: the reference is the LoRA policy with its adapters disabled (its parent).

    Sampling runs in eval mode under no_grad, where gradient checkpointing is off and generate
    keeps its KV cache (HF only drops the cache for a checkpointed layer in training with grads)."""
    policy.eval()
    value_model.eval()
    with autocast(device, precision):
        seqs, attention, response = sample(policy, tokenizer, prompts, 1, config.temperature, 1.0, config.max_new_tokens, config.system_prompt)
    responses = decode_responses(tokenizer, seqs, response)
    scores = score_responses(reward_model, rm_tokenizer, prompts, responses, config, precision).to(device)
    mask = response[:, 1:].float()
    logprobs, ref_logprobs, values = [], [], []
    for rows in batches(list(range(len(seqs))), config.micro_batch_size):
        ids, att = seqs[rows], attention[rows]
        with autocast(device, precision):
            logprobs.append(token_logprobs(policy(input_ids=ids, attention_mask=att, position_ids=position_ids(att)).logits, ids))
            with adapters_disabled(policy) if ref is None else contextlib.nullcontext(ref) as reference:
                ref_logprobs.append(token_logprobs(reference(input_ids=ids, attention_mask=att, position_ids=position_ids(att)).logits, ids))
            values.append(value_model(ids, att).float())
    logprobs, ref_logprobs, values = torch.cat(logprobs), torch.cat(ref_logprobs), torch.cat(values)
    rewards = kl_penalized_rewards(scores, logprobs, ref_logprobs, mask, config.beta)
    advantages, returns = gae_advantages(rewards, values * mask, mask, config.gamma, config.lam)
    return {
        "input_ids": seqs, "attention_mask": attention, "mask": mask, "scores": scores, "logprobs": logprobs,
        "ref_logprobs": ref_logprobs, "values": values * mask, "advantages": whiten(advantages, mask), "returns": returns,
    }


# ----------------------------------------------------------------------------------------------
# Training


def ppo_step(policy, value_model, data: dict[str, torch.Tensor], rows: list[int], ptx_batch, config: PPOConfig, device, precision: str) -> dict[str, float]:
    """One optimizer step's gradients over `rows` of the rollout, in micro-batches."""
    stats = {"policy_loss": 0.0, "value_loss": 0.0, "clip_fraction": 0.0, "approx_kl": 0.0, "ptx_loss": 0.0}
    for micro in batches(rows, config.micro_batch_size):
        d = {k: v[micro] for k, v in data.items()}
        share = len(micro) / len(rows)
        with autocast(device, precision):
            logits = policy(input_ids=d["input_ids"], attention_mask=d["attention_mask"], position_ids=position_ids(d["attention_mask"])).logits
            logprobs = token_logprobs(logits, d["input_ids"])
            values = value_model(d["input_ids"], d["attention_mask"]).float()
        pg, clip_fraction = ppo_policy_loss(logprobs, d["logprobs"], d["advantages"], d["mask"], config.clip)
        vf = value_loss(values, d["values"], d["returns"], d["mask"], config.clip)
        ((pg + config.vf_coef * vf) * share).backward()
        stats["policy_loss"] += pg.item() * share
        stats["value_loss"] += vf.item() * share
        stats["clip_fraction"] += clip_fraction.item() * share
        stats["approx_kl"] += approx_kl(logprobs, d["logprobs"], d["mask"]).item() * share
    if ptx_batch is not None:
        with autocast(device, precision):
            ptx = ptx_loss(policy, ptx_batch, config.ptx_coef)
        ptx.backward()
        stats["ptx_loss"] = ptx.item()
    return stats


def train_ppo(
    policy_dir: str | Path, reward_dir: str | Path, prompts: Sequence[Prompt], out_dir: str | Path | None,
    config: PPOConfig = PPOConfig(), progress: ProgressFn = no_progress,
    demonstrations: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Optimise the SFT policy at policy_dir against the RM at reward_dir on prompts; save to out_dir.

    demonstrations [{"prompt", "response"}] feed the ptx term when config.ptx_coef > 0.
    With config.lora_r > 0 the policy trains adapters and is saved as an adapter folder on policy_dir.
    Returns metrics with one history entry per iteration.
    """
    from .reward.artifact import load_reward_model

    set_seed(config.seed)
    device = pick_device(config.device)
    precision = resolve_precision(config.precision, device)
    if config.quantize_base:  # its value model copies or shares the parent's weights, which must be full ones
        raise ValueError("PPO does not train on a quantized base; use quantize_base with SFT or DPO")
    policy, tokenizer = load_policy(policy_dir, device)
    ref = None  # with LoRA the reference is the policy with its adapters disabled: no second copy
    if config.lora_r <= 0:
        ref, _ = load_policy(policy_dir, device)
        ref.eval().requires_grad_(False)
    reward_model, rm_tokenizer, _ = load_reward_model(reward_dir, device)
    reward_model.requires_grad_(False)
    # Before lora_apply: the value backbone copies (or, with LoRA, shares) the parent's weights.
    value_model, value_init = build_value_model(config, policy, reward_model, rm_tokenizer, tokenizer)
    value_model.to(device)
    policy = lora_apply(policy, config)
    policy_opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=config.lr)
    value_opt = torch.optim.AdamW([p for p in value_model.parameters() if p.requires_grad], lr=config.value_lr)
    demos = [encode_example(tokenizer, d["prompt"], d["response"], config.max_length, config.system_prompt) for d in demonstrations]
    use_ptx = config.ptx_coef > 0 and bool(demos)

    rng = random.Random(config.seed)
    history: list[dict[str, float]] = []
    started = time.time()
    for iteration in range(config.iterations):
        batch_prompts = rng.sample(list(prompts), min(config.rollout_batch_size, len(prompts)))
        data = rollout(policy, ref, value_model, reward_model, rm_tokenizer, tokenizer, batch_prompts, config, device, precision)
        policy.train()
        value_model.train()
        steps: list[dict[str, float]] = []
        stopped_early = False
        for _ in range(config.ppo_epochs):
            order = list(range(len(batch_prompts)))
            rng.shuffle(order)
            for rows in batches(order, config.mini_batch_size):
                ptx_batch = to_device(collate(rng.sample(demos, min(config.micro_batch_size, len(demos))), tokenizer.pad_token_id), device) if use_ptx else None
                steps.append(ppo_step(policy, value_model, data, rows, ptx_batch, config, device, precision))
                # The KL is measured before this step's update: past the limit, the step is dropped.
                if config.target_kl and steps[-1]["approx_kl"] > 1.5 * config.target_kl:
                    stopped_early = True
                    policy_opt.zero_grad(set_to_none=True)
                    value_opt.zero_grad(set_to_none=True)
                    break
                torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
                torch.nn.utils.clip_grad_norm_(value_model.parameters(), config.max_grad_norm)
                policy_opt.step()
                value_opt.step()
                policy_opt.zero_grad(set_to_none=True)
                value_opt.zero_grad(set_to_none=True)
            if stopped_early:
                break
        kl = ((data["logprobs"] - data["ref_logprobs"]) * data["mask"]).sum(-1)
        entry = {
            "iteration": iteration + 1, "score": data["scores"].mean().item(), "kl": kl.mean().item(),
            "response_length": data["mask"].sum(-1).mean().item(), "optimizer_steps": len(steps) - stopped_early,
            "stopped_early": stopped_early,
            **{k: sum(s[k] for s in steps) / len(steps) for k in steps[0]},
        }
        history.append(entry)
        progress((iteration + 1) / config.iterations, entry)

    metrics = {
        "iterations": config.iterations, "value_init": value_init, "precision": precision,
        "seconds": time.time() - started, "final_score": history[-1]["score"] if history else None,
        # The value model's total counts the frozen weights it shares with the policy or the RM under LoRA.
        "adaptation": describe(policy, config), "value_adaptation": describe(value_model, config), "history": history,
    }
    if out_dir is not None:
        save_policy(policy, tokenizer, out_dir, config, metrics, base_dir=policy_dir)
    return metrics
