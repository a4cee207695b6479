"""training.ml.calibration by hand: the pick's probability, a ranking by reward, the pair predictions
against a person's ranking, and the expected calibration error."""
from __future__ import annotations

import math

import pytest

from training.ml.calibration import best_of, expected_calibration_error, pair_predictions, reward_ranking, sigmoid


def test_the_pick_of_two_is_the_bradley_terry_probability_and_of_k_the_softmax():
    top, p = best_of([0.2, 1.0])
    assert top == 1 and p == pytest.approx(sigmoid(0.8)) and p == pytest.approx(1 / (1 + math.exp(-0.8)))
    top, p = best_of([0.0, math.log(2), math.log(5)])  # exp: 1, 2, 5
    assert top == 2 and p == pytest.approx(5 / 8)


def test_a_ranking_by_reward_ties_only_rewards_float32_cannot_tell_apart():
    assert reward_ranking([10, 11, 12, 13], [0.5, 2.0, 0.5, 0.5001]) == [[11], [13], [10, 12]]
    # float32 noise of one text scored twice is no preference
    assert reward_ranking([10, 11, 12], [0.5, 0.5000001, 0.49999995]) == [[11, 10, 12]]
    assert reward_ranking(["a", "b"], [-1.0, -1.0]) == [["a", "b"]]
    with pytest.raises(ValueError):
        reward_ranking([1, 2], [0.0])


def test_pair_predictions_are_the_model_s_confidence_in_its_side_and_whether_the_person_took_it():
    scores = {10: 1.0, 11: 0.0, 12: 2.0}
    # The person: 10 best, then 11 and 12 tied: pairs (10, 11) and (10, 12); the tie decides nothing.
    got = pair_predictions(scores, [[10], [11, 12]])
    assert got == [(pytest.approx(sigmoid(1.0)), True), (pytest.approx(sigmoid(1.0)), False)]
    assert pair_predictions({1: 0.5, 2: 0.5}, [[1], [2]]) == [(0.5, False)]  # equal rewards pick no side
    assert pair_predictions({1: 0.5}, [[1], [2]]) == []  # an unscored response: left out


def test_expected_calibration_error_by_hand():
    # Bin [0.5, 0.6): 0.55 hit, 0.55 miss -> acc 0.5, conf 0.55, gap 0.05, weight 2/5.
    # Bin [0.9, 1.0]: 0.9 hit, 0.95 hit, 1.0 miss -> acc 2/3, conf 0.95, gap 0.28333, weight 3/5.
    predictions = [(0.55, True), (0.55, False), (0.9, True), (0.95, True), (1.0, False)]
    expected = 2 / 5 * 0.05 + 3 / 5 * abs(2 / 3 - 0.95)
    assert expected_calibration_error(predictions) == pytest.approx(expected)
    assert expected_calibration_error([(0.7, True), (0.7, True), (0.7, False)]) == pytest.approx(abs(2 / 3 - 0.7))
    assert expected_calibration_error([]) is None
