from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from tests.tiny_models import tiny_llama
from training.ml.evaluate import bleu, evaluate_policy, perplexity, rouge_l, win_rate
from training.ml.reward.artifact import save_reward_model
from training.ml.reward.config import RewardConfig
from training.ml.reward.model import RewardModel
from training.ml.sft import SFTConfig, train_sft
from training.ml.text import load_policy

torch.set_num_threads(1)
DEMOS = [{"prompt": f"say hi {i}", "response": "hi"} for i in range(4)]


def test_text_metrics() -> None:
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert bleu(["zzz qqq"], ["the cat sat on the mat"]) < 1.0
    assert rouge_l(["the cat sat"], ["the cat sat"]) == pytest.approx(1.0)
    # LCS "the cat" = 2 of 3 hypothesis and 2 of 4 reference tokens: F1 = 2*(2/3)*(1/2)/(2/3+1/2)
    assert rouge_l(["the cat ran"], ["the cat sat down"]) == pytest.approx(4 / 7)


def test_win_rate_counts_ties_as_half() -> None:
    assert win_rate([1.0, 0.0, 2.0, 5.0], [0.0, 1.0, 2.0, 4.0]) == pytest.approx((1 + 0 + 0.5 + 1) / 4)


def test_perplexity_is_vocab_sized_for_a_random_model_and_falls_after_sft(tmp_path: Path) -> None:
    torch.manual_seed(0)
    parent = tiny_llama(tmp_path / "parent")
    model, tok = load_policy(parent)
    before = perplexity(model, tok, DEMOS)
    assert 0.3 * len(tok) < before < 3 * len(tok)  # near-uniform over the vocabulary
    train_sft(parent, DEMOS, tmp_path / "sft", SFTConfig(epochs=8, lr=1e-2, batch_size=4, micro_batch_size=4, warmup_ratio=0.0, precision="fp32"))
    model, tok = load_policy(tmp_path / "sft")
    assert perplexity(model, tok, DEMOS) < before / 4


def test_evaluate_policy_reports_every_metric(tmp_path: Path) -> None:
    torch.manual_seed(0)
    parent = tiny_llama(tmp_path / "parent")
    rm_model = RewardModel.from_backbone_path(parent, pooling="last")
    (tmp_path / "rm").mkdir()
    save_reward_model(tmp_path / "rm", rm_model, AutoTokenizer.from_pretrained(parent), RewardConfig(base_model=str(parent), pooling="last"))
    same = evaluate_policy(parent, parent, tmp_path / "rm", ["a", "b", "c"], DEMOS[:2], max_new_tokens=5, batch_size=2)
    assert same["kl_per_token"] == pytest.approx(0.0, abs=1e-6)  # identical weights
    train_sft(parent, DEMOS, tmp_path / "sft", SFTConfig(epochs=8, lr=1e-2, batch_size=4, micro_batch_size=4, warmup_ratio=0.0, precision="fp32"))
    result = evaluate_policy(tmp_path / "sft", parent, tmp_path / "rm", ["a", "b", "c"], DEMOS[:2], max_new_tokens=5, batch_size=2)
    assert result["kl_per_token"] > 0.01
    assert 0.0 <= result["win_rate_vs_parent"] <= 1.0
    assert math.isfinite(result["reward_mean"]) and math.isfinite(result["parent_reward_mean"])
    assert result["perplexity"] < same["perplexity"]
    assert result["rouge_l"] > same["rouge_l"], result["samples"]  # greedy now answers "hi"
    assert 0.0 <= result["bleu"] <= 100.0


def test_length_control_removes_a_win_rate_that_length_alone_explains():
    from training.ml.evaluate import length_controlled_win_rate

    # Longer answers win 80% of the time, shorter ones 20%; 60 are longer, 40 shorter.
    outcomes = [1.0] * 48 + [0.0] * 12 + [1.0] * 8 + [0.0] * 32
    diffs = [1.0] * 60 + [-1.0] * 40
    assert sum(outcomes) / len(outcomes) == pytest.approx(0.56)
    # p(d=+1) = sigmoid(b + w) = 0.8 and p(d=-1) = sigmoid(b - w) = 0.2 give b = 0: 50% at equal length.
    assert length_controlled_win_rate(outcomes, diffs) == pytest.approx(0.5, abs=1e-6)
    # With no length difference at all it is the plain win rate (ties count one half).
    assert length_controlled_win_rate([1.0, 0.5, 1.0, 0.0], [0, 0, 0, 0]) == pytest.approx(0.625, abs=1e-6)


def test_win_rate_interval_resamples_prompts():
    from training.ml.evaluate import win_rate_interval

    assert win_rate_interval([1.0] * 20) == (1.0, 1.0)
    low, high = win_rate_interval([1.0, 0.0] * 100, seed=3)
    assert low < 0.5 < high and high - low < 0.2  # about ±1.96 * 0.5 / sqrt(200) = ±0.07
