"""Reward accuracy by length: the length-only baseline and the buckets on hand-computed values, and
the validation figures train_reward_model stores. Pure torch, no DB."""
from __future__ import annotations

import pytest
import torch

from tests.tiny_models import tiny_bert
from training.ml.reward import RewardConfig, length_outcomes, length_report, margin_report, train_reward_model

torch.set_num_threads(1)


def test_the_longer_answer_wins_and_a_tie_is_half():
    assert length_outcomes(["aaaa", "a", "abc", ""], ["a", "aaaa", "xyz", ""]) == [1.0, 0.0, 0.5, 0.5]


def test_length_report_by_hand():
    margins = [1.0, -1.0, 0.0, 2.0]
    chosen = ["aaaa", "a", "aaaaaaaaaa", "abc"]
    rejected = ["a", "aaaa", "aaaaaaaaaa", "abcd"]
    # (len c - len r) / max: +0.75, -0.75, 0, -0.25. Model outcomes 1, 0, 1/2, 1; length's 1, 0, 1/2, 0.
    assert length_report(margins, chosen, rejected) == {
        "length_baseline": 0.375,
        "by_length": [
            {"bucket": "chosen shorter by >50%", "pairs": 1, "accuracy": 0.0, "length_baseline": 0.0},
            {"bucket": "chosen shorter by 10-50%", "pairs": 1, "accuracy": 1.0, "length_baseline": 0.0},
            {"bucket": "within 10%", "pairs": 1, "accuracy": 0.5, "length_baseline": 0.5},
            {"bucket": "chosen longer by >50%", "pairs": 1, "accuracy": 1.0, "length_baseline": 1.0},
        ],
    }


@pytest.mark.parametrize("chosen, rejected, bucket", [
    (10, 9, "within 10%"), (9, 10, "within 10%"),  # exactly 10%: still within
    (2, 1, "chosen longer by 10-50%"), (1, 2, "chosen shorter by 10-50%"),  # exactly 50%: the nearer bucket
    (3, 1, "chosen longer by >50%"), (1, 3, "chosen shorter by >50%"), (0, 0, "within 10%"),
])
def test_bucket_edges(chosen, rejected, bucket):
    report = length_report([1.0], ["x" * chosen], ["x" * rejected])
    assert [b["bucket"] for b in report["by_length"]] == [bucket]


def test_margin_report_and_its_refusals():
    report = margin_report([2.0, -2.0], ["long answer", "s"], ["s", "long answer"])
    assert report["pairs"] == 2 and report["accuracy"] == 0.5 and report["mean_margin"] == 0.0
    assert report["length_baseline"] == 0.5 and len(report["by_length"]) == 2
    assert margin_report([], [], []) == {"pairs": 0, "accuracy": None, "log_loss": None, "mean_margin": None,
                                         "length_baseline": None, "by_length": []}
    with pytest.raises(ValueError, match="differ in length"):
        length_report([1.0], ["a", "b"], ["c"])


def test_training_stores_validation_accuracy_by_length(tmp_path):
    # Validation: the chosen answer is shorter in half the groups, so length alone scores 1/2 there.
    group = lambda p, c, r: {"prompt": p, "responses": [c, r], "ranking": [[0], [1]]}  # noqa: E731
    train = [group(f"q{i}", "yes, glad to help!", "no.") for i in range(16)]
    val = [group("v1", "yes, glad to help!", "no."), group("v2", "yes!", "no, no, no, no, no."),
           group("v3", "yes, happy to!", "no, I won't, sorry, never."), group("v4", "tie?", "tie?")]  # v4: tied texts, one comparison
    config = RewardConfig(base_model=str(tiny_bert(tmp_path / "bert")), max_length=48, batch_size=4, epochs=2,
                          lr=1e-3, precision="fp32", device="cpu")
    metrics = train_reward_model(train, config, tmp_path / "rm", val_groups=val)
    assert metrics["val_comparisons"] == 4
    assert metrics["val_length_baseline"] == pytest.approx((1 + 0 + 0 + 0.5) / 4)
    buckets = {b["bucket"]: b for b in metrics["val_by_length"]}
    assert [(b["bucket"], b["pairs"]) for b in metrics["val_by_length"]] == [
        ("chosen shorter by >50%", 1), ("chosen shorter by 10-50%", 1), ("within 10%", 1), ("chosen longer by >50%", 1)]
    assert buckets["within 10%"] == {"bucket": "within 10%", "pairs": 1, "accuracy": 0.5, "length_baseline": 0.5}
    assert sum(b["pairs"] for b in metrics["val_by_length"]) == 4
    overall = sum(b["accuracy"] * b["pairs"] for b in metrics["val_by_length"]) / 4
    assert overall == pytest.approx(metrics["val_accuracy"])
