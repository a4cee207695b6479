"""How a reward model is judged on preference pairs: accuracy of r(chosen) > r(rejected), log loss
and mean margin, and how much of it is length. The training loop's validation and the product's
evaluation of a version on a file (training.services.reward.reward_model_evaluate) both report these.

A reward model that learned "longer is better" looks good wherever people preferred the longer
answer. So every evaluation also reports the length-only baseline (the longer answer wins), the
accuracy split by how much longer the chosen answer is, and the correlation of the margin with the
length difference, so the difference is visible per version and per data set."""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from .artifact import score
from .loss import pearson
from .model import RewardModel


def mean_or_none(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def margin_stats(margins: Sequence[float]) -> dict[str, float]:
    """accuracy (a tie, margin exactly 0, counts as half right, like a coin flip), log_loss
    (-log sigmoid(margin)) and mean_margin. Shape: margins [N], N > 0."""
    m = torch.tensor(margins, dtype=torch.float64)
    return {
        "accuracy": float(((m > 0).double() + 0.5 * (m == 0).double()).mean()),
        "log_loss": float(-F.logsigmoid(m).mean()),
        "mean_margin": float(m.mean()),
    }


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


def evaluate_pairs(
    model: RewardModel, tokenizer: PreTrainedTokenizerBase, records: Sequence[dict[str, Any]], **options: Any,
) -> dict[str, Any]:
    """Accuracy of r(chosen) > r(rejected) on {prompt, chosen, rejected} records; options as pair_margins."""
    if not records:
        return {"pairs": 0, "accuracy": None, "mean_margin": None, "log_loss": None}
    return {"pairs": len(records)} | margin_stats(pair_margins(model, tokenizer, records, **options))


# ----------------------------------------------------------------------------------------------
# Length

LENGTH_BUCKETS = (  # (name, upper bound of (len(chosen) - len(rejected)) / max of the two, in characters)
    ("chosen shorter by >50%", -0.5), ("chosen shorter by 10-50%", -0.1), ("within 10%", 0.1),
    ("chosen longer by 10-50%", 0.5), ("chosen longer by >50%", math.inf),
)


def length_outcomes(chosen: Sequence[str], rejected: Sequence[str]) -> list[float]:
    """The length-only baseline per pair: 1 when the chosen answer has more characters, 0 when fewer,
    0.5 on a tie. Shape: [N], [N] -> [N]."""
    return [1.0 if len(c) > len(r) else 0.0 if len(c) < len(r) else 0.5 for c, r in zip(chosen, rejected)]


def margin_outcomes(margins: Sequence[float]) -> list[float]:
    """1 when r(chosen) > r(rejected), 0.5 on a tie, 0 otherwise (like margin_stats's accuracy)."""
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
        "length_baseline": mean_or_none(baseline),
        "by_length": [
            {"bucket": name, "pairs": len(idx), "accuracy": mean_or_none([model[i] for i in idx]),
             "length_baseline": mean_or_none([baseline[i] for i in idx])}
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
            "accuracy_shorter_chosen": mean_or_none(shorter), "pairs_shorter_chosen": len(shorter),
            "accuracy_longer_chosen": mean_or_none(longer), "pairs_longer_chosen": len(longer)}


def margin_report(margins: Sequence[float], chosen: Sequence[str], rejected: Sequence[str]) -> dict[str, Any]:
    """evaluate_pairs's figures from margins already computed, plus length_report's and
    length_dependence's: {pairs, accuracy, mean_margin, log_loss, length_baseline, by_length,
    length_margin_corr, accuracy_shorter_chosen, pairs_shorter_chosen, accuracy_longer_chosen,
    pairs_longer_chosen}."""
    stats = margin_stats(margins) if len(margins) else {"accuracy": None, "log_loss": None, "mean_margin": None}
    return ({"pairs": len(margins)} | stats | length_report(margins, chosen, rejected)
            | length_dependence(margins, chosen, rejected))
