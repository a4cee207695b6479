"""Reward accuracy by length: the length-only baseline, the buckets, the margin report and the length
dependence (margin-length correlation, accuracy on shorter- and longer-chosen pairs) on hand-computed
values. Pure Python and torch, no model."""
from __future__ import annotations

import math

import pytest

from training.ml.reward.evaluate import length_dependence, length_outcomes, length_report, margin_report


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
                                         "length_baseline": None, "by_length": [], "length_margin_corr": None,
                                         "accuracy_shorter_chosen": None, "pairs_shorter_chosen": 0,
                                         "accuracy_longer_chosen": None, "pairs_longer_chosen": 0}
    with pytest.raises(ValueError, match="differ in length"):
        length_report([1.0], ["a", "b"], ["c"])


# ----------------------------------------------------------------------------------------------
# Length dependence of an evaluation


def test_length_dependence_by_hand():
    margins = [1.0, -1.0, 0.0, 2.0]
    chosen, rejected = ["aaaa", "a", "aaaaaaaaaa", "abc"], ["a", "aaaa", "aaaaaaaaaa", "abcd"]
    # Length differences 3, -3, 0, -1 (mean -1/4); margins' mean 1/2. Deviations: margins .5, -1.5, -.5, 1.5;
    # lengths 3.25, -2.75, .25, -.75. Sum of products 4.5, sums of squares 5 and 18.75.
    report = length_dependence(margins, chosen, rejected)
    assert report["length_margin_corr"] == pytest.approx(4.5 / math.sqrt(5 * 18.75))
    # Shorter chosen: pairs 2 (wrong) and 4 (right); longer chosen: pair 1 (right); pair 3 is a tie of lengths.
    assert {k: v for k, v in report.items() if k != "length_margin_corr"} == {
        "accuracy_shorter_chosen": 0.5, "pairs_shorter_chosen": 2, "accuracy_longer_chosen": 1.0, "pairs_longer_chosen": 1}
    assert margin_report(margins, chosen, rejected)["length_margin_corr"] == report["length_margin_corr"]


def test_length_dependence_without_evidence():
    # One pair, or a constant margin: no correlation to report; no shorter-chosen pair: no accuracy there.
    assert length_dependence([1.0], ["aa"], ["a"]) == {
        "length_margin_corr": None, "accuracy_shorter_chosen": None, "pairs_shorter_chosen": 0,
        "accuracy_longer_chosen": 1.0, "pairs_longer_chosen": 1}
    assert length_dependence([1.0, 1.0], ["aa", "a"], ["a", "aaa"])["length_margin_corr"] is None
    assert length_dependence([-2.0, 3.0], ["aa", "a"], ["a", "aaa"])["length_margin_corr"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="differ in length"):
        length_dependence([1.0], ["a", "b"], ["c"])
