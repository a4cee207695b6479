"""Direct Preference Optimization (Rafailov et al. 2023) on {prompt, chosen, rejected} pairs.

The reference is the parent model, frozen. Its log-probabilities never change, so they are
computed once up front, by the policy itself before its first update (it *is* the parent then;
with LoRA, by the policy with its adapters switched off): one forward per pair instead of one per
pair per epoch, and one model in memory, never a second copy. Chosen and rejected go through the
policy in one forward pass (2B rows) per micro-batch.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .common import ProgressFn, autocast, no_progress
from .distributed import micro_batches
from .lora import quantize_for_lora as _quantize, adapters_disabled, is_lora, lora_apply
from .preference_eval import outcomes
from .supervised import optimizer_start, optimizer_step, run_finish, run_start
from .text import SupervisedConfig, batches, collate, encode_example, load_policy, sequence_token_logprobs, to_device


@dataclass
class DPOConfig(SupervisedConfig):
    # The defaults are the measured recipe for 135M-class policies on a CPU; its figures (win rate by an
    # independent judge, held-out preference accuracy) are in the README's Benchmarks rows for
    # bench/loop_quality.py and bench/dpo_recipe.py, where they are kept up to date.
    beta: float = field(default=0.1, metadata={"help": "Strength of the implicit KL constraint to the reference; larger stays closer to the parent. 0.1, the DPO paper's, moves a small policy far enough for a judge to see without drifting in length (README, Benchmarks: bench/loop_quality.py)."})
    epochs: int = field(default=2, metadata={"help": "Passes over the preference pairs. Two: a round brings a few hundred pairs, and one pass at a gentle learning rate barely moved the policy (README, Benchmarks: bench/loop_quality.py)."})
    lr: float = field(default=3e-5, metadata={"help": "Peak AdamW learning rate with full weights for 135M-class policies (README, Benchmarks: bench/dpo_recipe.py); larger models want less (1e-6 to 5e-6 at 7B), and LoRA runs more (1e-4)."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Fraction of steps spent warming the learning rate up before cosine decay."})
    batch_size: int = field(default=8, metadata={"help": "Pairs per optimizer step. Small, because a round brings a few hundred pairs and the policy needs enough steps to move."})
    micro_batch_size: int = field(default=4, metadata={"help": "Pairs per forward pass (each is 2 sequences); lower it to save memory."})
    max_length: int = field(default=160, metadata={"help": "Prompt + response tokens per sequence; older prompt tokens are cut first, so the response and the last turns stay. Short, so that a round trains on a CPU in reasonable time; raise it for long documents or on a GPU."})
    eval_every: int = field(default=0, metadata={"help": "Measure implicit reward accuracy on the held-out pairs (those no step trains on) every this many steps, as TRL's rewards/accuracies on its eval set; 0: at the start and the end only. Training pairs alone cannot tell learning the preferences from memorising the pairs."})


def dpo_loss(
    policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sigmoid DPO loss.

        r_w = beta * (log pi(y_w|x) - log pi_ref(y_w|x))        implicit reward of the chosen
        r_l = beta * (log pi(y_l|x) - log pi_ref(y_l|x))        implicit reward of the rejected
        loss = -mean(log sigmoid(r_w - r_l))

    Shape: four [B] tensors of summed response log-probabilities -> (loss [], chosen_rewards [B],
    rejected_rewards [B]); the rewards are detached, for logging.
    """
    chosen = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected = beta * (policy_rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(chosen - rejected).mean()
    return loss, chosen.detach(), rejected.detach()


def encode_pairs(tokenizer, pairs: Sequence[dict[str, Any]], config: DPOConfig) -> list[tuple[tuple[list[int], int], tuple[list[int], int]]]:
    return [
        (
            encode_example(tokenizer, p["prompt"], p["chosen"], config.max_length, config.system_prompt),
            encode_example(tokenizer, p["prompt"], p["rejected"], config.max_length, config.system_prompt),
        )
        for p in pairs
    ]


def pair_logps(model: torch.nn.Module, micro: Sequence[tuple], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response logps of chosen [B] and rejected [B], from one forward over 2B rows."""
    batch = to_device(collate([c for c, _ in micro] + [r for _, r in micro], pad_id), device)
    logps, mask = sequence_token_logprobs(model, batch)
    sums = (logps * mask).sum(-1)
    return sums[: len(micro)], sums[len(micro) :]


@torch.no_grad()
def _all_logps(model: torch.nn.Module, pad_id: int, encoded: Sequence[tuple], config: DPOConfig, device: torch.device,
               precision: str) -> torch.Tensor:
    """Shape: -> [N, 2] (chosen, rejected) summed logps under model in eval mode (no dropout)."""
    model.eval()
    out = []
    for micro in batches(encoded, max(config.micro_batch_size * 2, 1)):
        with autocast(device, precision):
            chosen, rejected = pair_logps(model, micro, pad_id, device)
        out.append(torch.stack([chosen, rejected], dim=-1).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 2)


def reference_logps(model: torch.nn.Module, pad_id: int, encoded: Sequence[tuple], config: DPOConfig, device: torch.device,
                    precision: str) -> torch.Tensor:
    """Shape: -> [N, 2] (chosen, rejected) summed logps under the parent: the untrained policy, or
    the LoRA policy with its adapters disabled."""
    with adapters_disabled(model) if is_lora(model) else contextlib.nullcontext():
        return _all_logps(model, pad_id, encoded, config, device, precision)


def held_out_accuracy(model: torch.nn.Module, pad_id: int, encoded: Sequence[tuple], ref: torch.Tensor, config: DPOConfig,
                      device: torch.device, precision: str) -> dict[str, float]:
    """On pairs no step trains on: implicit reward accuracy, beta * ((log pi - log pi_ref)(y_w) - (same)(y_l)) > 0
    (ties 1/2: exactly 1/2 at the start, where pi is pi_ref), its mean margin, and plain preference accuracy,
    log pi(y_w) > log pi(y_l). The model goes back to train mode.

    Shape: encoded [N] pairs, ref [N, 2] -> three floats.
    """
    policy = _all_logps(model, pad_id, encoded, config, device, precision)
    model.train()
    margins = config.beta * ((policy[:, 0] - ref[:, 0]) - (policy[:, 1] - ref[:, 1]))
    return {"eval_implicit_reward_accuracy": float(outcomes(margins).mean()), "eval_implicit_margin": float(margins.mean()),
            "eval_pref_accuracy": float(outcomes(policy[:, 0] - policy[:, 1]).mean())}


def train_dpo(
    parent_dir: str | Path, pairs: Sequence[dict[str, Any]], out_dir: str | Path | None,
    config: DPOConfig = DPOConfig(), progress: ProgressFn = no_progress, eval_pairs: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Train the parent at parent_dir on pairs [{"prompt", "chosen", "rejected"}] and save to out_dir
    (None skips saving, for benchmarks). eval_pairs (held-out, same shape) are measured with
    held_out_accuracy at the start, every config.eval_every steps and at the end. Returns metrics with
    per-step history."""
    device, precision, ranks = run_start(config)
    model, tokenizer = load_policy(parent_dir, device, quantize=_quantize(config))
    model = lora_apply(model, config)
    pad_id = tokenizer.pad_token_id
    encoded = encode_pairs(tokenizer, pairs, config)
    ref = reference_logps(model, pad_id, encoded, config, device, precision)
    held = encode_pairs(tokenizer, eval_pairs, config)
    held_ref = reference_logps(model, pad_id, held, config, device, precision)
    measure = lambda: held_out_accuracy(ranks.unwrap(model), pad_id, held, held_ref, config, device, precision)  # noqa: E731
    start = measure() if held else {}
    if start and ranks.is_main:
        progress(0.0, {"step": 0, **start})
    model, optimizer, scheduler, total_steps, rng = optimizer_start(model, ranks, config, len(encoded))
    history: list[dict[str, float]] = []
    started = time.time()
    for epoch in range(config.epochs):
        order = list(range(len(encoded)))
        rng.shuffle(order)
        for step_ids in batches(order, config.batch_size):
            stats = {"loss": 0.0, "chosen_reward": 0.0, "rejected_reward": 0.0, "accuracy": 0.0}
            mine, weight = ranks.shard(step_ids)
            for micro_ids, last in micro_batches(mine, config.micro_batch_size):
                with ranks.no_sync(model, last):
                    with autocast(device, precision):
                        chosen, rejected = pair_logps(model, [encoded[i] for i in micro_ids], tokenizer.pad_token_id, device)
                    r = ref[micro_ids].to(device)
                    loss, cr, rr = dpo_loss(chosen, rejected, r[:, 0], r[:, 1], config.beta)
                    # The micro-batch's share of the whole step, so accumulated gradients equal one big
                    # batch's (times the rank count that DDP's averaging divides out; 0 for a filler).
                    share = len(micro_ids) / len(step_ids)
                    (loss * share * weight).backward()
                logged = share * (weight > 0)
                stats["loss"] += loss.item() * logged
                stats["chosen_reward"] += cr.mean().item() * logged
                stats["rejected_reward"] += rr.mean().item() * logged
                stats["accuracy"] += (cr > rr).float().mean().item() * logged
            stats = ranks.sum(stats)
            grad_norm = optimizer_step(model, optimizer, scheduler, config.max_grad_norm)
            history.append({"step": len(history) + 1, "epoch": epoch, "grad_norm": grad_norm, **stats})
            if held and (len(history) == total_steps or (config.eval_every and len(history) % config.eval_every == 0)):
                history[-1].update(measure())
            if ranks.is_main:
                progress(len(history) / total_steps, history[-1])

    elapsed = time.time() - started
    figures = {"pairs": len(encoded), "train_seconds": elapsed, "pairs_per_s": len(encoded) * config.epochs / max(elapsed, 1e-9)}
    if held:
        end = {k: history[-1][k] for k in start} if history else start
        figures.update({"eval_pairs": len(held), **{f"{k}_start": v for k, v in start.items()},
                        **{f"{k}_end": v for k, v in end.items()}})
    return run_finish(model, tokenizer, ranks, config, history=history, figures=figures, precision=precision,
                      out_dir=out_dir, parent_dir=parent_dir)
