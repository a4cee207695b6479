"""Does a policy agree with people? Preference accuracy on held-out human pairs, with no judge.

A win rate is only as good as the model that judges it; held-out human judgments need no judge.
For a policy pi, its parent pi_ref and human pairs (x, y_w, y_l), with log pi(y|x) summed over the
response's tokens, batched forward passes and no generation:

  preference accuracy        share of pairs where log pi(y_w|x) > log pi(y_l|x) (ties 1/2); also per
                             token (each side's mean log-probability), which does not favour the shorter answer
  implicit reward accuracy   DPO's (Rafailov et al. 2023, eq. 5; TRL's rewards/accuracies):
                             r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)), the share where r(x, y_w) > r(x, y_l)
                             (ties 1/2, so a policy equal to its parent scores 1/2, not 0)
  implicit margin            mean of r(x, y_w) - r(x, y_l)

Intervals are percentile bootstraps over prompts (a prompt's pairs are resampled together: pairs of
one prompt are not independent), and the child-minus-parent difference is paired, pair by pair.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from .common import autocast, pick_device, resolve_precision
from .text import DEFAULT_SYSTEM_PROMPT, batches, collate, encode_example, load_policy, sequence_token_logprobs, to_device


@torch.no_grad()
def pair_logprobs(model: torch.nn.Module, tokenizer, pairs: Sequence[dict[str, Any]], max_length: int = 512,
                  batch_size: int = 8, system_prompt: str = DEFAULT_SYSTEM_PROMPT,
                  precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probabilities and response token counts of each pair's two answers.

    Shape: pairs [N] of {"prompt", "chosen", "rejected"} -> (logps [N, 2], tokens [N, 2]), column 0 the
    chosen answer, column 1 the rejected; one forward over 2B rows per batch of B pairs.
    """
    device = next(model.parameters()).device
    model.eval()
    logps, tokens = [], []
    for chunk in batches(list(pairs), batch_size):
        rows = [encode_example(tokenizer, p["prompt"], p[side], max_length, system_prompt)
                for side in ("chosen", "rejected") for p in chunk]
        batch = to_device(collate(rows, tokenizer.pad_token_id), device)
        with autocast(device, precision):
            token_logps, mask = sequence_token_logprobs(model, batch)
        sums, counts = token_logps.sum(-1).float().cpu(), mask.sum(-1).float().cpu()
        logps.append(torch.stack([sums[: len(chunk)], sums[len(chunk):]], dim=-1))
        tokens.append(torch.stack([counts[: len(chunk)], counts[len(chunk):]], dim=-1))
    if not logps:
        return torch.zeros(0, 2), torch.zeros(0, 2)
    return torch.cat(logps), torch.cat(tokens)


def outcomes(margins: torch.Tensor) -> torch.Tensor:
    """Shape: margins [N] -> [N] in {0, 1/2, 1}: 1 where the chosen side is ahead, 1/2 on a tie."""
    return (margins > 0).to(margins.dtype) + 0.5 * (margins == 0).to(margins.dtype)  # float64 in, float64 out


def bootstrap_interval(values: Sequence[float] | torch.Tensor, clusters: Sequence[Any] | None = None,
                       rounds: int = 2000, seed: int = 0) -> tuple[float, float] | None:
    """Percentile-bootstrap 95% interval of the mean of values, resampling whole clusters (prompts).

    Shape: values [N], clusters [N] (a label per value; None: each value its own) -> (low, high),
    None for no values.
    """
    import numpy as np

    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return None
    labels = list(range(len(x))) if clusters is None else list(clusters)
    index: dict[Any, int] = {}
    ids = np.asarray([index.setdefault(label, len(index)) for label in labels])
    sums, counts = np.bincount(ids, weights=x), np.bincount(ids).astype(float)
    draws = np.random.default_rng(seed).integers(0, len(index), size=(rounds, len(index)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def preference_metrics(policy: torch.Tensor, parent: torch.Tensor, tokens: torch.Tensor, beta: float,
                       clusters: Sequence[Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """The section's figures from log-probabilities.

    Shape: policy, parent [N, 2] summed logps (chosen, rejected); tokens [N, 2] response token counts;
    clusters [N] prompt labels -> {pref_accuracy_parent, pref_accuracy_policy, their per-token variants,
    pref_accuracy_delta (policy - parent, paired) and its ci95, implicit_reward_accuracy and ci95,
    implicit_margin_mean and ci95, eval_pairs}.
    """
    if len(policy) == 0:
        return {"eval_pairs": 0}
    policy, parent, tokens = policy.double(), parent.double(), tokens.double()  # shares print as 0.45, not 0.4499999880
    per_token = tokens.clamp(min=1)
    parent_won, policy_won = outcomes(parent[:, 0] - parent[:, 1]), outcomes(policy[:, 0] - policy[:, 1])
    parent_tok = outcomes(parent[:, 0] / per_token[:, 0] - parent[:, 1] / per_token[:, 1])
    policy_tok = outcomes(policy[:, 0] / per_token[:, 0] - policy[:, 1] / per_token[:, 1])
    margins = beta * ((policy[:, 0] - parent[:, 0]) - (policy[:, 1] - parent[:, 1]))
    implicit = outcomes(margins)
    interval = lambda v: bootstrap_interval(v.tolist(), clusters, seed=seed)  # noqa: E731
    return {
        "eval_pairs": len(policy),
        "pref_accuracy_parent": float(parent_won.mean()), "pref_accuracy_parent_ci95": interval(parent_won),
        "pref_accuracy_policy": float(policy_won.mean()), "pref_accuracy_policy_ci95": interval(policy_won),
        "pref_accuracy_delta": float((policy_won - parent_won).mean()),
        "pref_accuracy_delta_ci95": interval(policy_won - parent_won),
        "pref_accuracy_per_token_parent": float(parent_tok.mean()),
        "pref_accuracy_per_token_policy": float(policy_tok.mean()),
        "pref_accuracy_per_token_delta": float((policy_tok - parent_tok).mean()),
        "pref_accuracy_per_token_delta_ci95": interval(policy_tok - parent_tok),
        "implicit_reward_accuracy": float(implicit.mean()), "implicit_reward_accuracy_ci95": interval(implicit),
        "implicit_margin_mean": float(margins.mean()), "implicit_margin_mean_ci95": interval(margins),
    }


def evaluate_preferences(policy_dir: str | Path, parent_dir: str | Path, pairs: Sequence[dict[str, Any]],
                         beta: float = 0.1, max_length: int = 512, batch_size: int = 8,
                         system_prompt: str = DEFAULT_SYSTEM_PROMPT, device: str = "auto", precision: str = "fp32",
                         seed: int = 0) -> dict[str, Any]:
    """preference_metrics for the policy at policy_dir against its parent on pairs [{"prompt", "chosen",
    "rejected"}] (prompts cluster the intervals). Plain and LoRA folders load as for generation, one model at
    a time, so memory holds one policy."""
    dev = pick_device(device)
    precision = resolve_precision(precision, dev)
    measured = []
    for folder in (policy_dir, parent_dir):
        model, tokenizer = load_policy(folder, dev)
        measured.append(pair_logprobs(model, tokenizer, pairs, max_length, batch_size, system_prompt, precision))
        del model
    (policy, tokens), (parent, _) = measured
    prompts = [str(p["prompt"]) for p in pairs]
    return preference_metrics(policy, parent, tokens, beta, clusters=prompts, seed=seed)
