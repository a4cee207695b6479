"""The saved reward model: a standard sequence-classification folder that any tool loads, the one
call that loads it back (old layouts included), and scoring (prompt, response) pairs with it."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from training.ml import modeling_pairwise_reward
from training.ml.checkpoint import CONFIG_FILE
from training.ml.common import autocast, resolve_precision, save_json
from training.ml.modeling_pairwise_reward import PairwiseRewardConfig, PairwiseRewardModel, register

from .config import RewardConfig
from .data import Encoded, PairEncoder, collate, pad_id_of
from .model import RewardModel, merge_adapters

# Our RewardConfig is CONFIG_FILE, the name every artifact's config has; folders saved before it was
# shared have LEGACY_CONFIG_FILE instead, and still load.
LEGACY_CONFIG_FILE = "reward_config.json"
HEAD_FILE = "reward_head.safetensors"  # old layout only: backbone folder + this head
MODELING_FILE = "modeling_pairwise_reward.py"  # new layout: copied next to config.json (auto_map)
LENGTH_HEAD_FILE = "length_head.safetensors"  # length_debias "odin": the length head, for inspection only (never scores)
METRICS_FILE = "metrics.json"


def reward_config_path(folder: str | Path) -> Path | None:
    """The RewardConfig file of a trained reward-model folder, None when the folder is none (a bare
    backbone, a policy, files that are gone). CONFIG_FILE counts only beside MODELING_FILE, since a
    policy's folder has a CONFIG_FILE too; LEGACY_CONFIG_FILE was only ever a reward model's."""
    folder = Path(folder)
    if (folder / CONFIG_FILE).is_file() and (folder / MODELING_FILE).is_file():
        return folder / CONFIG_FILE
    return folder / LEGACY_CONFIG_FILE if (folder / LEGACY_CONFIG_FILE).is_file() else None


def save_reward_model(folder: Path, model: RewardModel, tokenizer: PreTrainedTokenizerBase, config: RewardConfig) -> None:
    """Write a standard sequence-classification checkpoint (num_labels=1): config.json
    (model_type "pairwise_reward", the backbone's config inside, auto_map -> modeling_pairwise_reward.py),
    model.safetensors (`model.*` = backbone, `score.*` = head with the normalisation bias folded
    into score.bias), the tokenizer, and our RewardConfig (CONFIG_FILE). So
    `AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)` scores
    exactly like `score`, and TRL's RewardTrainer/PPO take it as is. LoRA adapters are merged into
    the backbone first (merge_adapters, in place), so the folder never holds an adapter.
    With a length head (length_debias "odin"), `score` is the quality head alone, so every loader
    scores without length; the length head goes to LENGTH_HEAD_FILE, which no loader reads."""
    register()  # this process's Auto classes know the model type we write
    folder = Path(folder)
    merge_adapters(model)
    backbone = model.backbone
    module = MODELING_FILE.removesuffix(".py")
    hf_config = PairwiseRewardConfig(
        backbone=backbone.config.to_dict(), pooling=model.pooling, normalisation_bias=float(model.bias),
        pad_token_id=pad_id_of(tokenizer), architectures=[PairwiseRewardModel.__name__],
        auto_map={"AutoConfig": f"{module}.{PairwiseRewardConfig.__name__}",
                  "AutoModelForSequenceClassification": f"{module}.{PairwiseRewardModel.__name__}"},
    )
    with torch.device("meta"):
        hf = PairwiseRewardModel(hf_config)
    hf.model = backbone  # share, don't copy: the trained weights are saved as they are
    hf.score = nn.Linear(backbone.config.hidden_size, 1).to(model.head.weight.device)
    with torch.no_grad():
        hf.score.weight.copy_(model.head.weight)
        hf.score.bias.copy_(model.head.bias.float() + model.bias)
    hf.save_pretrained(folder)
    shutil.copyfile(modeling_pairwise_reward.__file__, folder / MODELING_FILE)
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
    folder plus reward_head.safetensors), which versions already deployed still have; and the
    config under either name (reward_config_path)."""
    register()
    path = Path(path)
    saved = json.loads((reward_config_path(path) or path / CONFIG_FILE).read_text())
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


@torch.no_grad()
def rewards_of(
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
    return rewards_of(model, seqs, batch_size, device, resolve_precision(precision, device), pad_id_of(tokenizer))
