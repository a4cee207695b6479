"""Saving a trained policy: weights (safetensors), tokenizer, and the run's config and metrics,
written into a temporary folder and renamed into place so readers never see half a checkpoint.
README.md is left free: the service writes the model card there after the rename
(training.ml.card.write_model_card(folder, facts)). Also every trainer's optimizer and learning-rate
schedule (make_optimizer), and CONFIG_FILE, the name of the run's config in every artifact (reward
models' folders too: training.ml.reward.artifact)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_cosine_with_min_lr_schedule_with_warmup

from .common import atomic_output_dir, config_to_dict, save_json
from .lora import is_lora, load_causal_lm, save_adapter

CONFIG_FILE = "pairwise_config.json"  # the run's config, in every artifact (policy or reward model)
METRICS_FILE = "pairwise_metrics.json"


def describe_config(config: Any) -> dict[str, Any]:
    """The config's values with each field's help text, so a checkpoint explains itself."""
    return {
        "kind": type(config).__name__,
        "values": config_to_dict(config),
        "help": {f.name: f.metadata.get("help", "") for f in dataclasses.fields(config)},
    }


def save_policy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path, config: Any,
    metrics: dict[str, Any], base_dir: str | Path | None = None,
) -> Path:
    """A LoRA model is saved as its adapters on base_dir (the parent it was trained from), others whole."""
    with atomic_output_dir(out_dir) as tmp:
        tmp.chmod(0o755)
        if is_lora(model):
            if base_dir is None:
                raise ValueError("saving LoRA adapters needs the folder of the model they adapt")
            save_adapter(model, tokenizer, tmp, base_dir)
        else:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        save_json(tmp / CONFIG_FILE, describe_config(config))
        save_json(tmp / METRICS_FILE, metrics)
    return Path(out_dir)


def make_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, total_steps: int, warmup_ratio: float,
    *, min_lr_ratio: float = 0.0, decay_vectors: bool = True,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over trainable parameters with a cosine schedule (InstructGPT's SFT and RM use cosine decay):
    a linear warmup over the first warmup_ratio of total_steps (from 0), then a half cosine from lr down
    to min_lr_ratio * lr. decay_vectors False spares biases and norms (1-D tensors) the weight decay, as
    the reward trainer does: they hold offsets and scales, not capacity, so pulling them to 0 regularises nothing."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = params if decay_vectors else [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    warmup = int(total_steps * warmup_ratio)
    return optimizer, get_cosine_with_min_lr_schedule_with_warmup(optimizer, warmup, max(total_steps, 1),
                                                                 min_lr_rate=min_lr_ratio)


def adapter_merge(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Merge an adapter folder (and every adapter under it) into a new plain folder: the explicit step
    that turns a LoRA version into full weights. The adapter's config and metrics go along."""
    from transformers import AutoTokenizer

    model = load_causal_lm(adapter_dir)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    with atomic_output_dir(out_dir) as tmp:
        tmp.chmod(0o755)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for name in (CONFIG_FILE, METRICS_FILE):
            if (Path(adapter_dir) / name).is_file():
                (tmp / name).write_bytes((Path(adapter_dir) / name).read_bytes())
    return Path(out_dir)
