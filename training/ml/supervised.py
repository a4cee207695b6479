"""What the supervised policy trainers (SFT, DPO) share around their own loss, in the order a run
meets it: the run's device, precision and process group; the optimizer and its schedule; one
optimizer step; the metrics and the save at the end. Each trainer keeps its loss, its batches and
its model loading (DPO scores its reference with the policy it loaded, before any of this wraps it).
"""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from .checkpoint import make_optimizer, save_policy
from .common import pick_device, resolve_precision, set_seed
from .distributed import Ranks, ranks_get
from .lora import describe
from .text import SupervisedConfig


def run_start(config: SupervisedConfig) -> tuple[torch.device, str, Ranks]:
    """(device, precision, ranks) of a run, after seeding every generator with config.seed."""
    set_seed(config.seed)
    device = pick_device(config.device)
    return device, resolve_precision(config.precision, device), ranks_get(device)


def optimizer_start(
    model: torch.nn.Module, ranks: Ranks, config: SupervisedConfig, examples: int,
) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any, int, random.Random]:
    """(model, optimizer, scheduler, total steps, rng) with the model in train mode: the model is
    wrapped for the process group (DDP over the processes a launcher started; itself when alone),
    and the rng, seeded alike on every rank, draws the same order that Ranks.shard shares out."""
    total_steps = math.ceil(examples / config.batch_size) * config.epochs
    model = ranks.prepare(model)
    optimizer, scheduler = make_optimizer(model, config.lr, config.weight_decay, total_steps, config.warmup_ratio)
    model.train()
    return model, optimizer, scheduler, total_steps, random.Random(config.seed)


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, max_grad_norm: float) -> float:
    """Clip, step, advance the schedule and clear the gradients; returns the norm before clipping."""
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm).item()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def run_finish(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, ranks: Ranks, config: SupervisedConfig, *,
    history: list[dict[str, float]], figures: dict[str, Any], precision: str, out_dir: str | Path | None,
    parent_dir: str | Path,
) -> dict[str, Any]:
    """The run's metrics (final loss, steps, the trainer's own figures, then what every run records)
    and, on rank 0 alone, the saved artifact (atomically, as always; out_dir None saves nothing)."""
    model = ranks.unwrap(model)
    metrics = {
        "final_loss": history[-1]["loss"] if history else None, "steps": len(history), **figures,
        "precision": precision, "adaptation": describe(model, config), "processes": ranks.count, "history": history,
    }
    if out_dir is not None and ranks.is_main:
        save_policy(model, tokenizer, out_dir, config, metrics, base_dir=parent_dir)
    ranks.barrier()
    return metrics
