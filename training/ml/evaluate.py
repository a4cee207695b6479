"""Automatic evaluation of a policy against its parent (InstructGPT section 3.6 and 4, minus humans).

Each metric is a small function; `evaluate_policy` samples once per model and feeds them all:
  reward      mean normalised RM score of the policy's responses to held-out prompts
  kl          mean over sampled tokens of log pi(y_t) - log pi_ref(y_t) (and per response)
  perplexity  exp(mean NLL) of held-out demonstration responses
  bleu/rouge  sacreBLEU and ROUGE-L F1 of greedy responses against the demonstrations
  win rate    share of prompts where the RM prefers the policy's response to the parent's (ties 1/2)
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch

from .common import autocast, pick_device, resolve_precision, set_seed
from .generate import decode_responses, sample
from .sft import response_nll_sum
from .text import DEFAULT_SYSTEM_PROMPT, Prompt, batches, collate, encode_example, load_policy, position_ids, prompt_as_transcript, to_device, token_logprobs


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def rouge_l(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 (0-1)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, hyp)["rougeL"].fmeasure for hyp, ref in zip(hypotheses, references)]
    return sum(scores) / max(len(scores), 1)


def outcomes_of(policy_scores: Sequence[float], other_scores: Sequence[float]) -> list[float]:
    """Per prompt: 1 when the policy's score beats the other's, 1/2 for a tie, else 0."""
    return [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(policy_scores, other_scores)]


def win_rate(policy_scores: Sequence[float], parent_scores: Sequence[float]) -> float:
    """Share of prompts where the policy's score beats the parent's; a tie counts one half."""
    return sum(outcomes_of(policy_scores, parent_scores)) / max(len(policy_scores), 1)


def win_rate_interval(outcomes: Sequence[float], rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap 95% interval of the mean outcome, resampling prompts.

    Shape: outcomes [N] in {0, 0.5, 1} (one per prompt) -> (low, high).
    """
    import numpy as np

    values = np.asarray(outcomes, dtype=float)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(rounds, len(values)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def length_controlled_win_rate(outcomes: Sequence[float], length_diffs: Sequence[float], steps: int = 200) -> float:
    """AlpacaEval 2's length control: fit P(win) = sigmoid(b + w * d / sd(d)) to the outcomes (a tie is
    a target of 1/2) by Newton's method, and report sigmoid(b), the win rate at equal length.

    Shape: outcomes [N], length_diffs [N] (policy tokens - parent tokens) -> scalar in (0, 1).
    """
    import numpy as np

    y = np.asarray(outcomes, dtype=float)
    d = np.asarray(length_diffs, dtype=float)
    d = d / d.std() if d.std() > 0 else d * 0.0
    x = np.stack([np.ones_like(d), d], axis=1)
    theta = np.zeros(2)
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-x @ theta))
        hessian = x.T @ (x * (p * (1 - p))[:, None]) + 1e-6 * np.eye(2)  # tiny ridge: separable data stays finite
        step = np.linalg.solve(hessian, x.T @ (y - p))
        theta += step
        if np.abs(step).max() < 1e-10:
            break
    return float(1.0 / (1.0 + np.exp(-theta[0])))


@torch.no_grad()
def perplexity(model, tokenizer, demonstrations: Sequence[dict[str, Any]], max_length: int = 512, batch_size: int = 8,
               system_prompt: str = DEFAULT_SYSTEM_PROMPT, precision: str = "fp32") -> float:
    """exp(total response NLL / response tokens) over [{"prompt", "response"}]."""
    device = next(model.parameters()).device
    encoded = [encode_example(tokenizer, d["prompt"], d["response"], max_length, system_prompt) for d in demonstrations]
    nll, tokens = 0.0, 0
    for micro in batches(encoded, batch_size):
        batch = to_device(collate(micro, tokenizer.pad_token_id), device)
        with autocast(device, precision):
            nll += response_nll_sum(model, batch).item()
        tokens += int(batch["response_mask"][:, 1:].sum())
    return math.exp(nll / max(tokens, 1))


@torch.no_grad()
def kl_to_reference(policy, ref, sequences: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor,
                    batch_size: int = 8, precision: str = "fp32") -> dict[str, float]:
    """Monte-Carlo KL(pi || pi_ref) from the policy's own samples.

    Shape: sequences, attention_mask, response_mask [B, T] -> {"kl_per_token", "kl_per_response"}.
    """
    device = sequences.device
    diffs, masks = [], []
    for rows in batches(list(range(len(sequences))), batch_size):
        ids, att = sequences[rows], attention_mask[rows]
        with autocast(device, precision):
            lp = token_logprobs(policy(input_ids=ids, attention_mask=att, position_ids=position_ids(att)).logits, ids)
            lr = token_logprobs(ref(input_ids=ids, attention_mask=att, position_ids=position_ids(att)).logits, ids)
        diffs.append(lp - lr)
        masks.append(response_mask[rows][:, 1:].float())
    diff, mask = torch.cat(diffs), torch.cat(masks)
    return {
        "kl_per_token": float((diff * mask).sum() / mask.sum().clamp(min=1)),
        "kl_per_response": float((diff * mask).sum(-1).mean()),
    }


def rm_scores(reward_model, rm_tokenizer, prompts: Sequence[Prompt], responses: Sequence[str], max_length: int = 256) -> list[float]:
    from .reward.artifact import score

    return score(reward_model, rm_tokenizer, [prompt_as_transcript(p) for p in prompts], list(responses), 32, max_length)


def respond(model, tokenizer, prompts: Sequence[Prompt], temperature: float, max_new_tokens: int, batch_size: int,
            system_prompt: str, precision: str) -> tuple[list[str], list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """One response per prompt (temperature 0 = greedy); also the raw batches, for the KL."""
    device = next(model.parameters()).device
    texts, raw = [], []
    for chunk in batches(list(prompts), batch_size):
        with autocast(device, precision):
            out = sample(model, tokenizer, chunk, 1, temperature, 1.0, max_new_tokens, system_prompt)
        texts.extend(decode_responses(tokenizer, out[0], out[2]))
        raw.append(out)
    return texts, raw


def _load_pair(policy_dir: str | Path, parent_dir: str | Path, device: str, precision: str):
    """(device, precision, policy, parent, tokenizer), both models in eval mode; they share a tokenizer."""
    dev = pick_device(device)
    policy, tokenizer = load_policy(policy_dir, dev)
    parent, _ = load_policy(parent_dir, dev)
    return dev, resolve_precision(precision, dev), policy.eval(), parent.eval(), tokenizer


def evaluate_policy(
    policy_dir: str | Path, parent_dir: str | Path, reward_dir: str | Path | None, prompts: Sequence[Prompt],
    demonstrations: Sequence[dict[str, Any]] = (), max_new_tokens: int = 64, batch_size: int = 8,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT, seed: int = 0, device: str = "auto", precision: str = "fp32",
    base_dir: str | Path | None = None,
) -> dict[str, Any]:
    """All metrics for the policy at policy_dir; the parent is the KL reference and the win-rate
    opponent. reward_dir None skips the RM metrics. demonstrations [{"prompt", "response"}] give
    perplexity, BLEU and ROUGE-L. base_dir (the first policy of the lineage, when it is not the
    parent) adds the win rate against it, so versions of several rounds sit on one scale."""
    set_seed(seed)
    dev, precision, policy, parent, tokenizer = _load_pair(policy_dir, parent_dir, device, precision)
    results: dict[str, Any] = {"prompts": len(prompts), "demonstrations": len(demonstrations)}

    if prompts:
        # Temperature 1: the KL estimate needs samples from the policy itself.
        ours, raw = respond(policy, tokenizer, prompts, 1.0, max_new_tokens, batch_size, system_prompt, precision)
        theirs, _ = respond(parent, tokenizer, prompts, 1.0, max_new_tokens, batch_size, system_prompt, precision)
        kls = [kl_to_reference(policy, parent, *out, batch_size=batch_size, precision=precision) for out in raw]
        weights = [len(out[0]) for out in raw]
        results["kl_per_token"] = sum(k["kl_per_token"] * w for k, w in zip(kls, weights)) / sum(weights)
        results["kl_per_response"] = sum(k["kl_per_response"] * w for k, w in zip(kls, weights)) / sum(weights)
        if reward_dir is not None:
            from .reward.artifact import load_reward_model

            rm, rm_tok, rm_config = load_reward_model(reward_dir, dev)
            mine = rm_scores(rm, rm_tok, prompts, ours, rm_config.max_length)
            parents = rm_scores(rm, rm_tok, prompts, theirs, rm_config.max_length)
            results["reward_mean"] = sum(mine) / len(mine)
            results["parent_reward_mean"] = sum(parents) / len(parents)
            results["win_rate_vs_parent"] = win_rate(mine, parents)
            results["win_rate_vs_parent_ci95"] = list(win_rate_interval(outcomes_of(mine, parents), seed=seed))
            if base_dir is not None:
                base, _ = load_policy(base_dir, dev)
                based = rm_scores(rm, rm_tok, prompts, respond(base.eval(), tokenizer, prompts, 1.0, max_new_tokens,
                                                               batch_size, system_prompt, precision)[0], rm_config.max_length)
                del base
                results["win_rate_vs_base"] = win_rate(mine, based)
                results["win_rate_vs_base_ci95"] = list(win_rate_interval(outcomes_of(mine, based), seed=seed))
        results["samples"] = [{"prompt": prompt_as_transcript(p), "policy": a, "parent": b} for p, a, b in list(zip(prompts, ours, theirs))[:5]]

    if demonstrations:
        results["perplexity"] = perplexity(policy, tokenizer, demonstrations, batch_size=batch_size, system_prompt=system_prompt, precision=precision)
        greedy, _ = respond(policy, tokenizer, [d["prompt"] for d in demonstrations], 0.0, max_new_tokens, batch_size, system_prompt, precision)
        references = [d["response"] for d in demonstrations]
        results["bleu"] = bleu(greedy, references)
        results["rouge_l"] = rouge_l(greedy, references)
    return results
