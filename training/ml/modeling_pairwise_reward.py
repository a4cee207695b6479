"""The reward model as a standard Hugging Face sequence-classification checkpoint.

This file is copied verbatim into every saved reward-model folder (as `modeling_pairwise_reward.py`,
named in `config.json`'s `auto_map`), so it imports only torch and transformers. Any tool loads it:

    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)

and gets `logits` [B, 1] equal to `training.ml.reward.artifact.score` (the normalisation bias included).
Why a custom class: our encoder reward models pool the MEAN of the last hidden states, and BERT's
classifier reads the pooler/[CLS] instead; decoders pool the last token like LlamaForSequenceClassification,
but its `score` layer has no bias, so it could not carry the normalisation bias. A custom
`model_type` also fails loudly without trust_remote_code instead of silently loading a classifier
with a random head.

TRL: `base_model_prefix` is "model" and `score` is one linear layer, so TRL's PPO `get_reward`
(backbone -> score per token -> the last non-pad token) gives the same rewards for "last" pooling;
RewardTrainer only reads `logits`.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn as nn
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

MODEL_TYPE = "pairwise_reward"


def pool(
    hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str, token_type_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """Shape: hidden [B, T, H], attention_mask, token_type_ids [B, T] -> [B, H]. Left or right padding.

    'mean' over non-pad tokens, 'response' over segment-1 tokens (falls back to every token for a
    row without them: a tokenizer whose pair template gives no segment ids), 'last' non-pad token."""
    mask = attention_mask.to(hidden.dtype)
    if pooling == "response" and token_type_ids is not None:
        segment = mask * (token_type_ids == 1).to(hidden.dtype)
        mask = torch.where(segment.sum(1, keepdim=True) > 0, segment, mask)
    if pooling in ("mean", "response"):
        return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    last = (attention_mask * positions).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class PairwiseRewardConfig(PretrainedConfig):
    """The backbone's own config (a dict with its `model_type`) plus how to pool it.

    `normalisation_bias` is informational: it is already inside `score.bias` (head bias + the bias
    that centres the reference responses on 0), kept so the training code can split them again."""

    model_type = MODEL_TYPE

    def __init__(self, backbone: dict[str, Any] | None = None, pooling: str = "mean",
                 normalisation_bias: float = 0.0, **kwargs: Any):
        self.backbone = dict(backbone or {})
        self.pooling = pooling
        self.normalisation_bias = normalisation_bias
        kwargs.setdefault("num_labels", 1)
        super().__init__(**kwargs)
        self.hidden_size = self.backbone.get("hidden_size")

    def backbone_config(self) -> PretrainedConfig:
        values = dict(self.backbone)
        return AutoConfig.for_model(values.pop("model_type"), **values)


class PairwiseRewardModel(PreTrainedModel):
    """backbone -> pooled last hidden state -> score (Linear H -> 1, bias = head bias + normalisation)."""

    config_class = PairwiseRewardConfig
    base_model_prefix = "model"
    _supports_sdpa = True

    def __init__(self, config: PairwiseRewardConfig):
        super().__init__(config)
        self.model = AutoModel.from_config(config.backbone_config())
        self.score = nn.Linear(self.model.config.hidden_size, 1)
        self._takes_token_types = "token_type_ids" in inspect.signature(self.model.forward).parameters
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        """Shape: input_ids, attention_mask, token_type_ids [B, T] -> logits [B, 1] (float32).
        Without attention_mask, every token that is not config.pad_token_id counts."""
        if attention_mask is None:
            pad = self.config.pad_token_id
            attention_mask = torch.ones_like(input_ids) if pad is None else (input_ids != pad).long()
        if token_type_ids is not None and self._takes_token_types:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        pooled = pool(hidden.float(), attention_mask, self.config.pooling, token_type_ids)
        logits = self.score(pooled.to(self.score.weight.dtype)).float()
        loss = None
        if labels is not None:
            loss = nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
        return SequenceClassifierOutput(loss=loss, logits=logits)


def register() -> None:
    """Make the Auto classes know this model in THIS process (no trust_remote_code, no prompt);
    other processes load it through config.json's auto_map with trust_remote_code=True."""
    AutoConfig.register(MODEL_TYPE, PairwiseRewardConfig, exist_ok=True)
    AutoModelForSequenceClassification.register(PairwiseRewardConfig, PairwiseRewardModel, exist_ok=True)
