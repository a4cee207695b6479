"""The acquisition math against hand-computed values: uncertainty from rewards (pairwise and K-way),
the logistic heads on embedding differences, and the ensemble's disagreement."""
from __future__ import annotations

import math

import numpy as np
import pytest

from training.ml.acquisition import (
    disagreement_scores, embed_and_score, ensemble_fit, head_fit, pair_probabilities, ranking_diffs, uncertainty_scores,
)


def test_uncertainty_is_one_at_a_coin_flip_and_falls_with_the_margin():
    p = 1 / (1 + math.exp(-2.0))  # sigmoid(1 - (-1))
    got = uncertainty_scores([[0.0, 0.0], [1.0, -1.0], [-1.0, 1.0], [30.0, -30.0]])
    assert got == pytest.approx([1.0, 1 - abs(2 * p - 1), 1 - abs(2 * p - 1), 0.0], abs=1e-12)


def test_uncertainty_of_a_k_way_task_is_the_mean_over_its_pairs():
    rewards = [0.0, 1.0, 3.0]
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = sum(1 - abs(2 / (1 + math.exp(-(rewards[i] - rewards[j]))) - 1) for i, j in pairs) / 3
    got = uncertainty_scores([[5.0, 5.0], rewards])
    assert got == pytest.approx([1.0, expected])


def test_a_head_learns_a_separable_direction_and_is_order_symmetric():
    rng = np.random.default_rng(0)
    good, bad = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    good[:, 0] += 2.0  # the chosen answers are further along axis 0
    w = head_fit(good - bad)
    assert w[0] > 0 and abs(w[0]) > np.abs(w[1:]).max()
    p = pair_probabilities(w, good, bad)
    assert (p > 0.5).mean() > 0.9
    assert pair_probabilities(w, bad, good) == pytest.approx(1 - p)  # no intercept: shown order cannot matter


def test_the_ensemble_is_seeded_and_disagrees_where_labels_are_missing():
    rng = np.random.default_rng(1)
    chosen, rejected = rng.normal(size=(60, 4)), rng.normal(size=(60, 4))
    chosen[:, 0] += 1.5
    diffs = chosen - rejected
    diffs[:, 3] = 0.0  # no label ever varies along axis 3
    diffs[:3, 3] = rng.normal(size=3) * 3  # ... except three, which bootstrap resamples keep or drop
    heads = ensemble_fit(diffs, heads=5, seed=7)
    assert heads.shape == (5, 4)
    assert np.array_equal(heads, ensemble_fit(diffs, heads=5, seed=7))
    assert not np.array_equal(heads, ensemble_fit(diffs, heads=5, seed=8))
    along_labels = np.array([[0.0, 0, 0, 0], [1.0, 0, 0, 0]])
    along_unlabeled = np.array([[0.0, 0, 0, 0], [0.0, 0, 0, 1.0]])
    same = np.zeros((2, 4))
    scores = disagreement_scores(heads, [along_labels, along_unlabeled, same])
    p = pair_probabilities(heads, along_labels[:1], along_labels[1:])
    assert scores[0] == pytest.approx(p.var())
    assert scores[1] > scores[0]  # few labels along axis 3: the resamples' heads part ways there
    assert scores[2] == 0.0  # identical answers: every head says 1/2
    assert 0 <= scores.min() and scores.max() <= 0.25


def test_identical_heads_never_disagree():
    heads = np.tile(np.array([[1.0, -2.0]]), (5, 1))
    assert disagreement_scores(heads, [np.array([[0.3, 1.0], [2.0, -1.0], [0.0, 0.0]])]) == pytest.approx([0.0])


def test_ranking_diffs_take_every_pair_across_tie_groups():
    e = np.array([[1.0, 0], [0, 1.0], [2.0, 2.0]])
    got = ranking_diffs(e, [[2], [0, 1]])  # 2 beats the tied 0 and 1
    assert got.tolist() == [[1.0, 2.0], [2.0, 1.0]]
    assert ranking_diffs(e, [[0, 1, 2]]).shape == (0, 2)


def test_ensemble_needs_labels():
    with pytest.raises(ValueError, match="no labeled pairs"):
        ensemble_fit(np.zeros((0, 3)))


def test_embed_and_score_matches_the_reward_models_own_scores(tiny_reward_base):
    from training.ml.reward.artifact import score
    from training.ml.reward.model import RewardModel
    from transformers import AutoTokenizer

    model = RewardModel.from_backbone_path(tiny_reward_base)
    tokenizer = AutoTokenizer.from_pretrained(tiny_reward_base)
    prompts, responses = ["q one", "q two", "q three"], ["a short one", "a much longer answer here", "x"]
    rewards, pooled = embed_and_score(model, tokenizer, prompts, responses, batch_size=2, max_length=32)
    assert rewards == pytest.approx(score(model, tokenizer, prompts, responses, max_length=32), abs=1e-5)
    assert pooled.shape == (3, model.head.in_features)
    # The pooled states are what the head reads: the head on them gives the rewards back.
    head = model.head.weight.detach().numpy()[0]
    assert pooled @ head + float(model.head.bias.detach()) + float(model.bias) == pytest.approx(rewards, abs=1e-5)
