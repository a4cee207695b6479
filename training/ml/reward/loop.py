"""Training a reward model: train_reward_model runs the whole job (train, normalise, validate, save
atomically) and _train_loop the optimizer steps, on one process or a launcher's group."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
from transformers import AutoTokenizer

from training.ml.checkpoint import make_optimizer
from training.ml.common import ProgressFn, atomic_output_dir, autocast, no_progress, pick_device, resolve_precision, save_json, set_seed
from training.ml.distributed import Ranks, ranks_get
from training.ml.lora import describe

from .artifact import METRICS_FILE, rewards_of, save_reward_model
from .config import RewardConfig, default_reward_base, reward_lr
from .data import (PairEncoder, TokenizedGroup, batch_order, group_comparisons, make_batch, pad_id_of, split_by_prompt,
                   tokenize_groups)
from .evaluate import length_dependence, length_report, margin_stats, mean_or_none
from .loss import ODIN_WEIGHTS, grouped_ranking_loss, odin_regulariser
from .model import RewardModel, merge_adapters, trainable_reward_model


def train_reward_model(
    groups: Sequence[dict],
    config: RewardConfig,
    output_dir: str | Path,
    progress: ProgressFn = no_progress,
    reference_texts: Sequence[tuple[str, str]] | None = None,
    val_groups: Sequence[dict] | None = None,
) -> dict[str, Any]:
    """Train on ranked groups, normalise, evaluate, and save atomically to output_dir. With
    val_groups the caller has split (every group trains, val_groups validate); without, the groups
    are split by prompt (split_by_prompt, config.val_fraction and config.seed).

    Contract for the caller: output_dir appears whole or not at all (atomic rename); it holds the
    sequence-classification checkpoint (save_reward_model), pairwise_config.json and metrics.json,
    and never README.md, which is the model card's place: write it after this returns with
    training.ml.card.write_model_card(output_dir, facts), using the returned metrics.

    Under a launcher (training.ml.launch) every process runs this: each trains on its share of every
    step (_train_loop), then normalises and evaluates the same merged model on all the data, so all
    return the same metrics; rank 0 alone reports progress and writes output_dir."""
    started = time.perf_counter()
    config = dataclasses.replace(config, base_model=config.base_model or str(default_reward_base()))
    set_seed(config.seed)  # the same seed on every rank: the same head, adapters and batch order
    device = pick_device(config.device)
    precision = resolve_precision(config.precision, device)
    ranks = ranks_get(device)
    with atomic_output_dir(output_dir) if ranks.is_main else contextlib.nullcontext() as tmp:
        tokenizer = AutoTokenizer.from_pretrained(config.base_model)
        model = trainable_reward_model(config).to(device)
        config = dataclasses.replace(config, pooling=model.pooling)
        encoder = PairEncoder(tokenizer, config.max_length, add_eos=model.pooling == "last")
        pad_id = pad_id_of(tokenizer)

        if val_groups is None:
            train_groups, val_groups = split_by_prompt(groups, config.val_fraction, config.seed)
        else:
            train_groups, val_groups = list(groups), list(val_groups)
        train_tok = tokenize_groups(train_groups, encoder)
        val_tok = tokenize_groups(val_groups, encoder)
        usable = [g for g in train_tok if g.comparisons]
        if not usable:
            raise ValueError("no training comparisons (every group is empty, fully tied, or held out)")

        history, train_seconds = _train_loop(model, usable, config, device, precision, pad_id,
                                             progress if ranks.is_main else no_progress, ranks)
        adaptation = describe(model, config)  # trainable (adapters + head) vs total, before merging
        merge_adapters(model)  # normalise, evaluate and save the very model the folder holds

        model.eval()
        if reference_texts is None:
            reference_texts = [(g["prompt"], g["responses"][g["ranking"][0][0]]) for g in train_groups if g["ranking"]]
        reference = list(reference_texts)[: config.reference_limit]
        model.bias.fill_(-_mean_reward(model, encoder, reference, config, device, precision, pad_id))
        val = _evaluate_groups(model, val_tok, config, device, precision, pad_id)
        # Same order as the comparisons of tokenize_groups: (winner text, loser text) per comparison.
        val_texts = [(g["responses"][w], g["responses"][lo]) for g in val_groups for w, lo, _ in group_comparisons(g)]
        val_args = (val.get("margins", []), [w for w, _ in val_texts], [lo for _, lo in val_texts])
        by_length = length_report(*val_args)

        metrics = {
            "train_loss": mean_or_none([h["loss"] for h in history]),
            "final_train_loss": mean_or_none([h["loss"] for h in history[-max(1, len(history) // 10):]]),
            "val_accuracy": val["accuracy"],
            "val_log_loss": val["log_loss"],
            "val_comparisons": val["comparisons"],
            "val_groups": len(val_tok),
            "val_length_baseline": by_length["length_baseline"],
            "val_by_length": by_length["by_length"],
            **{f"val_{k}": v for k, v in length_dependence(*val_args).items()},
            "comparisons": sum(len(g.comparisons) for g in usable),
            "groups": len(usable),
            "groups_without_comparisons": len(train_tok) - len(usable),
            "sequences": sum(len(g.responses) for g in train_tok + val_tok),
            "truncated": sum(r.truncated for g in train_tok + val_tok for r in g.responses),
            "reference_size": len(reference),
            "bias": float(model.bias),
            "precision": precision,
            "device": str(device),
            "train_seconds": train_seconds,
            "comparisons_per_s": sum(len(g.comparisons) for g in usable) * config.epochs / max(train_seconds, 1e-9),
            "adaptation": adaptation,
            "processes": ranks.count,
            "history": history,
        }
        if ranks.is_main:  # rank 0 alone writes the folder (atomically, as always); tmp is None elsewhere
            save_reward_model(tmp, model, tokenizer, config)
        metrics["seconds"] = time.perf_counter() - started
        if ranks.is_main:
            save_json(tmp / METRICS_FILE, metrics)
    ranks.barrier()  # no rank returns before the folder is in place
    if ranks.is_main:
        progress(1.0, {k: v for k, v in metrics.items() if k != "history"})
    return metrics


def _train_loop(
    model: RewardModel,
    groups: list[TokenizedGroup],
    config: RewardConfig,
    device: torch.device,
    precision: str,
    pad_id: int,
    progress: ProgressFn,
    ranks: Ranks | None = None,
) -> tuple[list[dict[str, Any]], float]:
    """Optimizer steps of config.grad_accum micro-batches of config.batch_size judgments each; trains
    model in place. With several processes (ranks), every one walks the same micro-batches (same seed)
    and takes its share of each (Ranks.shard): its loss, a mean over its judgments, is weighed by its
    share of the micro-batch (times the rank count, which DDP's averaging divides out), so the ranks'
    gradients sum to the one-process step's exactly, a short micro-batch included. Alone, share and
    weight are 1: the same arithmetic and random numbers as ever."""
    ranks = ranks or Ranks()
    rng = random.Random(config.seed)
    micro_per_epoch = math.ceil(len(groups) / config.batch_size)
    total_steps = math.ceil(micro_per_epoch * config.epochs / config.grad_accum)
    optimizer, scheduler = reward_optimizer(model, config, total_steps)
    micro = [b for _ in range(config.epochs) for b in batch_order(groups, config.batch_size, config.group_by_length, rng)]
    wrapped = ranks.prepare(model)  # DDP over the processes a launcher started; the model itself when alone
    odin_terms = ODIN_WEIGHTS if model.length_head is not None else {}
    history: list[dict[str, Any]] = []
    model.train()
    t0 = time.perf_counter()
    for step in range(total_steps):
        chunk = micro[step * config.grad_accum:(step + 1) * config.grad_accum]
        stats = {"loss": 0.0, "correct": 0, "seen": 0} | {f"odin_{k}": 0.0 for k in odin_terms}  # this rank's part of the step's sums
        for m, indices in enumerate(chunk):
            mine, weight = ranks.shard(indices)  # weight 0: a filler, only to join the all-reduce
            share = len(mine) / len(indices)
            with ranks.no_sync(wrapped, last=m == len(chunk) - 1):
                batch = make_batch([groups[i] for i in mine], pad_id, device)
                with autocast(device, precision):
                    rewards, regulariser, terms = _training_rewards(wrapped, model, batch)
                loss = grouped_ranking_loss(rewards, batch["winners"], batch["losers"], batch["group_index"], batch["num_groups"],
                                            batch["targets"], batch["weights"])
                ((loss + regulariser) * share * weight / len(chunk)).backward()
            counted = weight > 0
            stats["loss"] += loss.item() * share * counted
            for k, v in terms.items():
                stats[f"odin_{k}"] += v * share * counted
            margins = (rewards[batch["winners"]] - rewards[batch["losers"]]).detach()
            stats["correct"] += int((margins > 0).sum()) * counted
            stats["seen"] += margins.numel() * counted
        stats = ranks.sum(stats)
        grad_norm = _clip(wrapped, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        record = {
            "step": step + 1,
            "loss": stats["loss"] / len(chunk),
            "accuracy": stats["correct"] / max(1, stats["seen"]),
            "lr": scheduler.get_last_lr()[0],
            "grad_norm": grad_norm,
            "seconds": time.perf_counter() - t0,
        } | {k: stats[k] / len(chunk) for k in stats if k.startswith("odin_")}
        history.append(record)
        if (step + 1) % config.log_every == 0 or step + 1 == total_steps:
            progress(0.95 * (step + 1) / total_steps, dict(record))
    return history, time.perf_counter() - t0


def reward_optimizer(
    model: nn.Module, config: RewardConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Every trainer's AdamW and cosine schedule (checkpoint.make_optimizer) at reward_lr(config), with
    biases and norms spared the weight decay and the cosine ending at config.min_lr_ratio of the peak."""
    return make_optimizer(model, reward_lr(config), config.weight_decay, total_steps, config.warmup_fraction,
                          min_lr_ratio=config.min_lr_ratio, decay_vectors=False)


def _training_rewards(
    wrapped: nn.Module, model: RewardModel, batch: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor | float, dict[str, float]]:
    """What the ranking loss reads, the regulariser added to it, and the regulariser's terms: the
    reward head alone and nothing (length_debias 'none'), or ODIN's sum of the quality and length
    heads and odin_regulariser. Shape: -> rewards [N], [] scalar or 0.0, {term: value}."""
    args = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    if model.length_head is None:
        return wrapped(*args), 0.0, {}
    quality, length = wrapped(*args, with_length=True)
    regulariser, terms = odin_regulariser(quality, length, batch["response_tokens"],
                                          model.head.weight, model.length_head.weight)
    return quality + length, regulariser, terms


def _clip(model: nn.Module, max_norm: float) -> float:
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return float(torch.norm(torch.stack([p.grad.norm() for p in params])))


def _mean_reward(model, encoder, pairs, config, device, precision, pad_id) -> float:
    if not pairs:
        return float(model.bias)
    seqs = encoder.encode([p for p, _ in pairs], [r for _, r in pairs])
    rewards = rewards_of(model, seqs, config.eval_batch_size, device, precision, pad_id)
    return sum(rewards) / len(rewards)


def _evaluate_groups(model, groups: list[TokenizedGroup], config, device, precision, pad_id) -> dict[str, Any]:
    seqs = [r for g in groups for r in g.responses]
    if not seqs or not any(g.comparisons for g in groups):
        return {"accuracy": None, "log_loss": None, "comparisons": 0}
    rewards = iter(rewards_of(model, seqs, config.eval_batch_size, device, precision, pad_id))
    margins = []
    for g in groups:
        r = [next(rewards) for _ in g.responses]
        margins.extend(r[w] - r[l] for w, l in g.comparisons)
    return margin_stats(margins) | {"comparisons": len(margins), "margins": margins}
