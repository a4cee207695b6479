"""Supervised fine-tuning on labeler demonstrations (InstructGPT step 1).

The loss is next-token cross-entropy on the response tokens only: the prompt is context, not
something the policy should learn to write. Each optimizer step sees `batch_size` examples, run as
micro-batches whose summed token losses are divided by the step's total response tokens, so the
gradient equals that of one big batch whatever the micro-batch size.

On a group of processes (training.ml.distributed, started by training.ml.launch) each rank takes its
share of every step's examples, still dividing by the *whole* step's response tokens (every rank
encodes all examples, so it knows them) and weighing by the rank count that DDP's averaging divides
out: N processes take the same steps as one. Rank 0 alone reports progress and saves.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .common import ProgressFn, autocast, no_progress
from .distributed import micro_batches
from .lora import quantize_for_lora as _quantize, lora_apply
from .supervised import optimizer_start, optimizer_step, run_finish, run_start
from .text import IGNORE_INDEX, SupervisedConfig, batches, collate, encode_example, forward_logits, lm_labels, load_policy, to_device


@dataclass
class SFTConfig(SupervisedConfig):
    epochs: int = field(default=2, metadata={"help": "Passes over the demonstrations (the paper used 16 with early selection by RM score)."})
    lr: float = field(default=2e-5, metadata={"help": "Peak AdamW learning rate (1e-4 is a good start with LoRA)."})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Fraction of steps spent warming the learning rate up before cosine decay."})
    batch_size: int = field(default=16, metadata={"help": "Examples per optimizer step."})
    micro_batch_size: int = field(default=4, metadata={"help": "Examples per forward pass; lower it to save memory (gradients accumulate)."})
    max_length: int = field(default=512, metadata={"help": "Prompt + response tokens kept per example; older prompt tokens are cut first."})


def response_nll_sum(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed cross-entropy over response tokens. Shape: batch tensors [B, T] -> scalar."""
    logits = forward_logits(model, batch["input_ids"], batch["attention_mask"])
    labels = lm_labels(batch)[:, 1:]
    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")


def train_sft(
    parent_dir: str | Path, examples: Sequence[dict[str, Any]], out_dir: str | Path,
    config: SFTConfig = SFTConfig(), progress: ProgressFn = no_progress,
) -> dict[str, Any]:
    """Fine-tune the model at parent_dir on examples [{"prompt": str | messages, "response": str}]
    and save it to out_dir. Returns metrics: final loss, steps, tokens/s and per-step history."""
    device, precision, ranks = run_start(config)
    model, tokenizer = load_policy(parent_dir, device, quantize=_quantize(config))
    model = lora_apply(model, config)
    encoded = [encode_example(tokenizer, ex["prompt"], ex["response"], config.max_length, config.system_prompt) for ex in examples]
    model, optimizer, scheduler, total_steps, rng = optimizer_start(model, ranks, config, len(encoded))
    history: list[dict[str, float]] = []
    step, tokens, started = 0, 0, time.time()
    for epoch in range(config.epochs):
        order = list(range(len(encoded)))
        rng.shuffle(order)
        for step_ids in batches(order, config.batch_size):
            n_tokens = sum(len(encoded[i][0]) - encoded[i][1] for i in step_ids)  # the whole step's, on every rank
            loss_sum = 0.0
            mine, weight = ranks.shard(step_ids)
            for micro_ids, last in micro_batches(mine, config.micro_batch_size):
                batch = to_device(collate([encoded[i] for i in micro_ids], tokenizer.pad_token_id), device)
                with ranks.no_sync(model, last):
                    with autocast(device, precision):
                        loss = response_nll_sum(model, batch) / n_tokens
                    (loss * weight).backward()  # weight: the rank count (1 alone), 0 for a filler
                loss_sum += loss.item() * (weight > 0)
            loss_sum = ranks.sum({"loss": loss_sum})["loss"]
            grad_norm = optimizer_step(model, optimizer, scheduler, config.max_grad_norm)
            step += 1
            tokens += n_tokens
            history.append({"step": step, "epoch": epoch, "loss": loss_sum, "grad_norm": grad_norm, "lr": scheduler.get_last_lr()[0]})
            if ranks.is_main:
                progress(step / total_steps, history[-1])

    elapsed = time.time() - started
    figures = {"examples": len(encoded), "response_tokens_per_s": tokens / max(elapsed, 1e-9), "seconds": elapsed}
    return run_finish(model, tokenizer, ranks, config, history=history, figures=figures, precision=precision,
                      out_dir=out_dir, parent_dir=parent_dir)
