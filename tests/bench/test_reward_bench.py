"""bench/reward_bench.py end to end on a tiny model: both trainers run on the same split, and the
paired accuracy difference is what the two sets of margins say."""
from __future__ import annotations

import json

import pytest
import torch

from bench import reward_bench

torch.set_num_threads(1)


def test_paired_difference_by_hand():
    # pair 1: both right; 2: only ours; 3: only TRL; 4: only ours; 5: both wrong
    result = reward_bench.paired_difference([1.0, 0.5, -0.2, 2.0, -1.0], [0.3, -0.1, 0.4, -3.0, -0.5], seed=0)
    assert result["acc_diff"] == pytest.approx((3 - 2) / 5)
    assert result["only_ours_right"] == 2 and result["only_trl_right"] == 1
    low, high = result["acc_diff_ci95"]
    assert -1.0 <= low <= result["acc_diff"] <= high <= 1.0 and low < high


def test_bench_runs_both_trainers_on_the_same_split(tmp_path, bert_dir, separable_file):
    base, data = bert_dir, separable_file(40)
    out = reward_bench.main(["--data", str(data), "--k", "2", "--limit", "40", "--max-length", "32", "--batch", "4",
                             "--val-fraction", "0.25", "--base", str(base), "--precision", "fp32",
                             "--json", str(tmp_path / "out.json")])
    assert json.loads((tmp_path / "out.json").read_text()) == out
    assert out["comparisons"] + out["val_pairs"] == 40 and out["trl_comparisons"] == out["comparisons"]
    assert out["trl_dropped"] == 0
    # The paired difference comes from the same held-out pairs as the two accuracies.
    assert out["acc_diff"] == pytest.approx(out["ours_val_acc"] - out["trl_val_acc"], abs=1e-3)
    assert out["speedup"] > 0
