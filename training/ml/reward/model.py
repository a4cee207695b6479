"""The reward model: backbone -> pooled hidden state -> linear head -> scalar reward, the model a run
trains (LoRA adapters on the backbone when asked) and the merge that turns it into the one model a
folder holds."""
from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from transformers import AutoConfig, AutoModel

from training.ml.lora import is_lora, lora_apply
from training.ml.modeling_pairwise_reward import pool

from .config import LENGTH_DEBIAS, RewardConfig

POOLINGS = frozenset({"mean", "response", "last"})


def is_decoder_config(config: Any) -> bool:
    archs = getattr(config, "architectures", None) or []
    return bool(getattr(config, "is_decoder", False)) or any("CausalLM" in a for a in archs)


class RewardModel(nn.Module):
    """backbone -> pooled hidden state -> linear head -> scalar reward (+ normalisation bias).

    Pooling: encoders (BERT/MiniLM) see the whole sequence at every position, and MiniLM was
    trained as a sentence embedder with mean pooling, so the mean over non-pad tokens is the
    representation it already knows. 'response' averages only the response's tokens (segment 1
    of the pair template): the responses to one prompt share the prompt, so averaging its tokens
    in too dilutes exactly the part that differs. A decoder's causal attention only sees
    everything at the last token, so we read the last non-pad position there.

    With length_head (length_debias "odin", training only), a second linear head reads the same
    pooled state: forward(..., with_length=True) gives both heads' scores; plain forward, and so
    evaluation, normalisation, scoring and the saved folder, use `head` alone.
    """

    def __init__(self, backbone: nn.Module, pooling: str, length_head: bool = False):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {sorted(POOLINGS)}, got {pooling!r}")
        self.backbone = backbone
        self.pooling = pooling
        hidden = backbone.config.hidden_size
        self.head = nn.Linear(hidden, 1)
        # Small head init keeps the first rewards near 0, so the loss starts at log 2.
        nn.init.normal_(self.head.weight, std=1.0 / math.sqrt(hidden + 1))
        nn.init.zeros_(self.head.bias)
        self.length_head: nn.Linear | None = None
        if length_head:
            self.length_head = nn.Linear(hidden, 1)
            nn.init.normal_(self.length_head.weight, std=1.0 / math.sqrt(hidden + 1))
            nn.init.zeros_(self.length_head.bias)
        # Not trained: set after training so the reference responses average 0 (paper 3.5).
        self.register_buffer("bias", torch.zeros(()))
        self._takes_token_types = "token_type_ids" in inspect.signature(backbone.forward).parameters

    @classmethod
    def from_backbone_path(cls, path: str | Path, pooling: str = "auto", dropout: float | None = 0.0,
                           length_head: bool = False) -> "RewardModel":
        config = AutoConfig.from_pretrained(path)
        if dropout is not None:
            _override_dropout(config, dropout)
        if pooling == "auto":
            pooling = "last" if is_decoder_config(config) else "mean"
        backbone = AutoModel.from_pretrained(path, config=config)
        return cls(backbone, pooling, length_head)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        with_length: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Shape: input_ids, attention_mask, token_type_ids [B, T] -> rewards [B] (float32); with_length
        (a model with a length head): (rewards [B], length-head scores [B])."""
        kwargs = {}
        if token_type_ids is not None and self._takes_token_types:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        pooled = pool(hidden.float(), attention_mask, self.pooling, token_type_ids)
        rewards = self.head(pooled.to(self.head.weight.dtype)).squeeze(-1).float() + self.bias
        if not with_length:
            return rewards
        if self.length_head is None:
            raise ValueError("this reward model has no length head (length_debias 'none')")
        return rewards, self.length_head(pooled.to(self.length_head.weight.dtype)).squeeze(-1).float()


def trainable_reward_model(config: RewardConfig) -> RewardModel:
    """The model a run trains: config.base_model's backbone and a fresh head. With config.lora_r > 0
    the backbone's weights are frozen under LoRA adapters on config.lora_target_modules (only the
    adapters and the head train); with config.gradient_checkpointing its blocks recompute their
    activations in the backward pass (same loss and gradients, less memory)."""
    if config.length_debias not in LENGTH_DEBIAS:
        raise ValueError(f"length_debias must be one of {', '.join(LENGTH_DEBIAS)}, got {config.length_debias!r}")
    model = RewardModel.from_backbone_path(config.base_model, config.pooling, config.dropout,
                                           length_head=config.length_debias == "odin")
    # The heads sit outside the peft wrapper, so peft's freezing leaves them trainable.
    model.backbone = lora_apply(model.backbone, config, task_type="FEATURE_EXTRACTION")
    return model


def merge_adapters(model: RewardModel) -> RewardModel:
    """Fold LoRA adapters into the backbone's weights (W + alpha/r * B A) and switch the training-only
    options (gradient checkpointing, input grads) off: the plain model that is evaluated and saved.
    In place; a plain model only loses those options.

    Why merged, when policies are saved as adapters on their parent (training.ml.lora): the reward
    folder must load as ONE model, with AutoModelForSequenceClassification, in TRL (PPO,
    RewardTrainer) and any other tool, none of which knows our adapter chains; and reward backbones
    here are small (MiniLM is 22M parameters, ~90 MB), so a full copy per version costs little,
    while a policy version would cost gigabytes."""
    if is_lora(model.backbone):
        model.backbone = model.backbone.merge_and_unload()
    backbone = model.backbone
    if any(getattr(m, "gradient_checkpointing", False) is True for m in backbone.modules()):
        # transformers 5 renamed it (the old name warns); 4.x has only the old one
        off = getattr(backbone, "activation_checkpointing_disable", None) or backbone.gradient_checkpointing_disable
        off()
    if getattr(backbone, "_require_grads_hooks", None) or hasattr(backbone, "_require_grads_hook"):
        backbone.disable_input_require_grads()
    return model


def _override_dropout(config: Any, p: float) -> None:
    for name, value in list(vars(config).items()):
        if "dropout" in name and isinstance(value, float):
            setattr(config, name, p)
