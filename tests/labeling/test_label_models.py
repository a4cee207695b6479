"""The label models on hand-made crowds whose answer is known."""
import random

import numpy as np
import pytest

from labeling.label_models import ModelFit, Vote, flagged, gold_outcomes, judgment_votes, label_models_fit, versus_majority


def _crowd(*, n_items=400, seed=0, kinds=None, overlap=3, accuracy=(0.7, 0.9)):
    """Items (2i, 2i+1) with a random true winner; each judged by `overlap` annotators of `kinds`."""
    rng = random.Random(seed)
    kinds = kinds or {**{w: "good" for w in range(6)}, 6: "spam", 7: "first"}
    skill = {w: rng.uniform(*accuracy) for w in kinds}
    truth, votes = {}, []
    for it in range(n_items):
        item = (2 * it, 2 * it + 1)
        truth[item] = rng.choice([1, -1])
        for w in rng.sample(sorted(kinds), overlap):
            a_first = rng.random() < 0.5
            if kinds[w] == "spam":
                outcome = rng.choice([1, -1])
            elif kinds[w] == "first":
                outcome = 1 if a_first else -1
            else:
                outcome = truth[item] if rng.random() < skill[w] else -truth[item]
            votes.append(Vote(item, w, outcome, a_first))
    return votes, truth


def _accuracy(fit, truth):
    hits = 0.0
    for k, item in enumerate(fit.items):
        p_a, p_b = fit.probs[k, 0], fit.probs[k, 1]
        hits += 0.5 if p_a == p_b else float((p_a > p_b) == (truth[item] > 0))
    return hits / len(fit.items)


def test_judgment_votes_use_the_ranking_pairs_and_shown_order():
    votes = judgment_votes(annotator=7, ranking=[[3], [1, 4], [2]], shown_order=[4, 3, 2, 1])
    by_item = {v.item: v for v in votes}
    assert len(votes) == 6  # C(4, 2): five decided pairs and the tie (1, 4)
    assert by_item[(1, 3)].outcome == -1 and by_item[(1, 4)].outcome == 0 and by_item[(2, 3)].outcome == -1
    assert by_item[(1, 2)].outcome == 1
    assert by_item[(1, 4)].a_first is False and by_item[(2, 3)].a_first is False and by_item[(3, 4)].a_first is False
    assert by_item[(1, 2)].a_first is False and by_item[(2, 4)].a_first is False
    assert {v.annotator for v in votes} == {7}


def test_spammer_and_always_first_clicker_are_flagged_good_annotators_are_not():
    votes, _ = _crowd(n_items=900)
    for name in ("dawid-skene", "position-em"):
        fit = label_models_fit(votes=votes, models=[name])[name]
        assert flagged(fit) == {6, 7}, name
        first = fit.annotators[7]
        assert [f["flag"] for f in first["flags"]] == ["spammer", "always-first"]
        assert first["first_share"] == 1.0 and first["first_p_value"] < 1e-10
        assert "picked the first-shown response in" in first["flags"][1]["evidence"]
        assert fit.annotators[6]["accuracy_high"] < 0.7 < fit.annotators[0]["accuracy_low"] + 0.1
        for good in range(6):
            s = fit.annotators[good]
            assert s["accuracy_low"] <= s["accuracy"] <= s["accuracy_high"] and s["accuracy"] > 0.65


def test_dawid_skene_beats_majority_where_it_must():
    # Two reliable annotators and three random ones on every item: the majority follows the
    # random three whenever they agree against the good pair; DS learns whom to trust.
    kinds = {0: "good", 1: "good", 2: "spam", 3: "spam", 4: "spam"}
    votes, truth = _crowd(n_items=600, kinds=kinds, overlap=5, accuracy=(0.95, 0.95), seed=3)
    fits = label_models_fit(votes=votes)
    majority = _accuracy(fits["majority"], truth)
    assert _accuracy(fits["dawid-skene"], truth) > majority + 0.05
    assert _accuracy(fits["position-em"], truth) > majority + 0.05


def test_position_model_discounts_a_position_biased_annotator():
    # Annotator 2 is right only when the winner is shown first and otherwise clicks first too:
    # a second-shown pick from them is strong evidence, a first-shown pick none.
    rng = random.Random(5)
    votes, truth = [], {}
    for it in range(500):
        item, t = (2 * it, 2 * it + 1), rng.choice([1, -1])
        truth[item] = t
        for w in (0, 1):
            a_first = rng.random() < 0.5
            votes.append(Vote(item, w, t if rng.random() < 0.65 else -t, a_first))
        a_first = rng.random() < 0.5
        winner_first = (t > 0) == a_first
        votes.append(Vote(item, 2, t if winner_first or rng.random() < 0.5 else -t, a_first))
    fits = label_models_fit(votes=votes, models=["majority", "position-em"])
    assert _accuracy(fits["position-em"], truth) > _accuracy(fits["majority"], truth)
    assert fits["position-em"].annotators[2]["first_share"] > 0.6


def test_gold_items_anchor_the_posterior_and_ties_are_votes():
    votes = [Vote((1, 2), 10, -1, True), Vote((1, 2), 11, -1, True), Vote((3, 4), 10, 0, True),
             Vote((3, 4), 11, 1, False)]
    fits = label_models_fit(votes=votes, gold=gold_outcomes([[1], [2]]))
    for fit in fits.values():
        assert fit.posterior((1, 2)) == 1.0  # gold says 1 beats 2, whatever the crowd said
        assert np.all((fit.probs >= 0) & (fit.probs <= 1))
        np.testing.assert_allclose(fit.probs.sum(axis=1), 1.0, atol=1e-6)
    assert fits["majority"].posterior((3, 4)) == pytest.approx(0.75)


def test_posteriors_stay_in_range_and_nothing_breaks_on_tiny_or_empty_input():
    assert label_models_fit(votes=[])["dawid-skene"].items == []
    fits = label_models_fit(votes=[Vote((1, 2), 5, 1, True)])
    for fit in fits.values():
        assert 0.0 <= fit.posterior((1, 2)) <= 1.0
        assert fit.annotators[5]["flags"] == []  # one vote is no evidence
    with pytest.raises(ValueError, match="unknown label models"):
        label_models_fit(votes=[], models=["glad"])


def test_versus_majority_counts_flips_and_decided_ties():
    items = [(1, 2), (3, 4), (5, 6), (7, 8)]
    majority = ModelFit("majority", items, np.array([[0.7, 0.3, 0], [0.5, 0.5, 0], [0.3, 0.7, 0], [0.5, 0.5, 0]]))
    model = ModelFit("dawid-skene", items, np.array([[0.2, 0.8, 0], [0.9, 0.1, 0], [0.1, 0.9, 0], [0.4, 0.4, 0.2]]))
    assert versus_majority({"majority": majority, "dawid-skene": model}) == {
        "dawid-skene": {"pairs": 4, "decided": 3, "flips": 1, "majority_ties_decided": 1}}
    assert versus_majority({"dawid-skene": model}) == {}
