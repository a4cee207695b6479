"""The pure statistics, against small cases computed by hand."""
import numpy as np
import pytest

from labeling import stats


def test_ranking_outcomes_orders_pairs_and_marks_ties():
    assert stats.ranking_outcomes([[3], [1, 4], [2]]) == {
        (1, 2): 1, (1, 3): -1, (1, 4): 0, (2, 3): -1, (2, 4): -1, (3, 4): 1}


def test_pairwise_agreement_by_hand_excluding_ties():
    votes = {
        "x": {"a": 1, "b": 1, "c": -1},  # pairs ab agree, ac and bc disagree
        "y": {"a": 1, "b": 0},  # b tied: no comparable pair
        "z": {"b": -1, "c": -1},  # agree
        "w": {"a": 1},  # one annotator: nothing to compare
    }
    overall, per = stats.pairwise_agreement(votes)
    assert (overall.hits, overall.total) == (2, 4) and overall.rate == 0.5
    assert (per["a"].hits, per["a"].total) == (1, 2)
    assert (per["b"].hits, per["b"].total) == (2, 3)
    assert (per["c"].hits, per["c"].total) == (1, 3)


def test_agreement_over_time_uses_the_later_vote():
    votes = {"x": {"a": (1, "w1"), "b": (1, "w2")}, "y": {"a": (1, "w1"), "b": (-1, "w1")}}
    out = stats.agreement_over_time(votes)
    assert list(out) == ["w1", "w2"] and out["w1"].rate == 0.0 and out["w2"].rate == 1.0


def test_krippendorff_alpha_two_values_by_hand():
    # Coincidences o11 = 2, o12 = o21 = 1, o22 = 2; n1 = n2 = 3, n = 6; delta^2(1,2) = (6 - 3)^2 = 9.
    # alpha = 1 - (n - 1) * sum(o * d) / sum(n_c * n_k * d) = 1 - 5 * 18 / 162 = 4/9.
    assert stats.krippendorff_alpha_ordinal([(1, 1), (1, 2), (2, 2)]) == pytest.approx(4 / 9)


def test_krippendorff_alpha_ordinal_three_values_by_hand():
    # Units (1,1), (2,2), (3,3), (1,3): o11 = 2, o22 = 2, o33 = 2, o13 = o31 = 1.
    # n1 = 3, n2 = 2, n3 = 3, n = 8. Ordinal delta^2: d12 = (3+2 - 2.5)^2 = 6.25,
    # d23 = (2+3 - 2.5)^2 = 6.25, d13 = (3+2+3 - 3)^2 = 25.
    # sum o*d = 2 * 25 = 50; sum n n d = 2 * (3*2*6.25 + 2*3*6.25 + 3*3*25) = 2 * 300 = 600.
    # alpha = 1 - 7 * 50 / 600 = 0.41666...
    assert stats.krippendorff_alpha_ordinal([(1, 1), (2, 2), (3, 3), (1, 3)]) == pytest.approx(1 - 7 * 50 / 600)


def test_krippendorff_alpha_edges():
    assert stats.krippendorff_alpha_ordinal([(1, 1), (2, 2, 2), (3, 3)]) == pytest.approx(1.0)
    assert stats.krippendorff_alpha_ordinal([(1,), (2,)]) is None
    assert stats.krippendorff_alpha_ordinal([(1, 1), (1, 1)]) == 1.0
    # Ordinal: disagreeing by two steps costs more than by one.
    near = stats.krippendorff_alpha_ordinal([(1, 2), (2, 2), (3, 3), (1, 1)])
    far = stats.krippendorff_alpha_ordinal([(1, 3), (2, 2), (3, 3), (1, 1)])
    assert far < near


def test_cohen_kappa_by_hand():
    # p_o = 3/4; marginals a: 1/2, 1/2; b: 1/4, 3/4; p_e = 1/2*1/4 + 1/2*3/4 = 1/2; kappa = 0.25/0.5.
    assert stats.cohen_kappa([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(0.5)
    assert stats.cohen_kappa([1, -1, 0], [1, -1, 0]) == pytest.approx(1.0)
    assert stats.cohen_kappa([1, 1], [1, 1]) is None
    with pytest.raises(ValueError):
        stats.cohen_kappa([1], [1, 2])


def test_majority_vote_counts_ties_as_votes():
    assert stats.majority_vote([1, 1, -1]) == stats.Consensus(1, 2 / 3, 3, False)
    assert stats.majority_vote([-1, -1]).unanimous and stats.majority_vote([-1, -1]).winner == -1
    assert stats.majority_vote([1, 0]).winner is None
    assert stats.majority_vote([1, -1, 0, 1]).winner is None  # 2 of 4 is no strict majority


def test_wilson_interval_contains_the_rate():
    low, high = stats.wilson_interval(60, 100)
    assert low < 0.6 < high and low == pytest.approx(0.502, abs=1e-3) and high == pytest.approx(0.691, abs=1e-3)
    assert stats.wilson_interval(0, 0) is None


def test_bradley_terry_recovers_a_known_ordering():
    rng = np.random.default_rng(7)
    strength = np.array([0.0, 0.7, 1.4, 2.1])  # natural-log scale: player 3 best
    battles = []
    for _ in range(4000):
        a, b = rng.choice(4, 2, replace=False)
        p = 1 / (1 + np.exp(strength[b] - strength[a]))
        u = rng.random()
        battles.append((a, b, 1.0 if u < p * 0.9 else 0.5 if u < p * 0.9 + 0.1 else 0.0))
    ratings = stats.bradley_terry(battles, 4)
    assert list(np.argsort(ratings)) == [0, 1, 2, 3]
    assert ratings.mean() == pytest.approx(1000)
    # Elo scale: a natural-log gap of 0.7 is 0.7 * 400 / ln 10 = 122 points.
    assert np.diff(ratings) == pytest.approx([122] * 3, abs=30)


def test_bradley_terry_ties_are_half_wins():
    even = stats.bradley_terry([(0, 1, 0.5)] * 10, 2)
    assert even[0] == pytest.approx(even[1])
    # 3 wins and 2 ties of 5 = 4 of 5 points: p = 0.8, a gap of 400 * log10(4) = 240.8.
    scores = stats.bradley_terry([(0, 1, 1.0)] * 3 + [(0, 1, 0.5)] * 2, 2)
    assert scores[0] - scores[1] == pytest.approx(400 * np.log10(4), abs=1)


def test_bradley_terry_bootstrap_interval_covers_the_estimate_and_is_seeded():
    battles = [(0, 1, 1.0)] * 30 + [(0, 1, 0.0)] * 10 + [(1, 2, 1.0)] * 25 + [(1, 2, 0.0)] * 15
    ratings, low, high = stats.bradley_terry_bootstrap(battles, 3, rounds=100, seed=1)
    assert np.all(low <= ratings + 1e-6) and np.all(ratings <= high + 1e-6) and np.all(high - low > 10)
    again = stats.bradley_terry_bootstrap(battles, 3, rounds=100, seed=1)
    assert np.allclose(again[1], low) and list(np.argsort(-ratings)) == [0, 1, 2]


def test_unbeaten_player_stays_finite():
    ratings = stats.bradley_terry([(0, 1, 1.0)] * 5, 2)
    assert np.all(np.isfinite(ratings)) and ratings[0] > ratings[1]


def test_bradley_terry_bootstrap_with_no_players_is_empty():
    # A project whose every battle compares two responses of one source has no players at all.
    ratings, low, high = stats.bradley_terry_bootstrap([], 0, rounds=10)
    assert ratings.shape == low.shape == high.shape == (0,)
