"""The reward model's losses by hand: the grouped ranking loss (ties, its gradient) and ODIN's
regularisers (Pearson correlation, the three terms, the way they move each head). Pure torch."""
from __future__ import annotations

import math

import pytest
import torch

from labeling.ranking import ranking_pairs
from training.ml.reward.loss import (
    grouped_ranking_loss, odin_decorrelation_loss, odin_length_loss, odin_orthogonality_loss, odin_regulariser, pearson,
)

torch.set_num_threads(1)


def neg_log_sigmoid(x: float) -> float:
    return -math.log(1.0 / (1.0 + math.exp(-x)))


def test_loss_k2_by_hand():
    rewards = torch.tensor([1.0, 0.2, 0.5, 0.9])
    loss = grouped_ranking_loss(
        rewards, winners=torch.tensor([0, 2]), losers=torch.tensor([1, 3]),
        group_index=torch.tensor([0, 1]), num_groups=2,
    )
    expected = (neg_log_sigmoid(1.0 - 0.2) + neg_log_sigmoid(0.5 - 0.9)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_loss_k4_with_tie_and_a_k2_group_by_hand():
    # Group 0: K=4 ranked [[2], [0, 3], [1]] -> 5 comparisons (0 and 3 tied). Group 1: K=2.
    r = [0.3, -0.4, 1.2, 0.1, 0.7, 0.0]
    ranking = [[2], [0, 3], [1]]
    pairs = ranking_pairs(ranking)
    winners = [w for w, _ in pairs] + [4]
    losers = [l for _, l in pairs] + [5]
    loss = grouped_ranking_loss(
        torch.tensor(r), torch.tensor(winners), torch.tensor(losers),
        torch.tensor([0] * 5 + [1]), num_groups=2,
    )
    group0 = (
        neg_log_sigmoid(1.2 - 0.3) + neg_log_sigmoid(1.2 - 0.1) + neg_log_sigmoid(1.2 + 0.4)
        + neg_log_sigmoid(0.3 + 0.4) + neg_log_sigmoid(0.1 + 0.4)
    ) / 5  # normaliser = 5 non-tied comparisons, not C(4,2) = 6
    group1 = neg_log_sigmoid(0.7 - 0.0)
    assert loss.item() == pytest.approx((group0 + group1) / 2, rel=1e-6)


def test_loss_gradient_flows_to_every_response():
    rewards = torch.tensor([0.1, 0.5, 0.3], requires_grad=True)
    grouped_ranking_loss(rewards, torch.tensor([0, 0, 1]), torch.tensor([1, 2, 2]),
                         torch.tensor([0, 0, 0]), 1).backward()
    assert torch.all(rewards.grad != 0)


def test_comparisons_of_skips_ties():
    assert ranking_pairs([[0], [1]]) == [(0, 1)]
    assert sorted(ranking_pairs([[2], [0, 3], [1]])) == sorted([(2, 0), (2, 3), (2, 1), (0, 1), (3, 1)])
    assert ranking_pairs([[0, 1, 2]]) == []
    assert len(ranking_pairs([[0], [1], [2], [3]])) == 6


# ----------------------------------------------------------------------------------------------
# ODIN's losses by hand


X, Y = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([2.0, 4.0, 5.0, 9.0])
# Deviations: x -1.5, -.5, .5, 1.5; y -3, -1, 0, 4. Sum of products 11, sums of squares 5 and 26.
RHO = 11 / math.sqrt(5 * 26)


def test_pearson_by_hand_and_its_degenerate_batches():
    assert float(pearson(X, Y)) == pytest.approx(RHO)
    assert float(pearson(X.flip(0), Y)) == pytest.approx(-RHO)
    assert float(pearson(X, torch.full((4,), 7.0))) == 0.0  # one length for the whole batch: no evidence
    assert float(pearson(X[:1], Y[:1])) == 0.0


def test_odin_losses_by_hand():
    assert float(odin_length_loss(X, Y)) == pytest.approx(-RHO)  # the length head rises with length: lowest
    assert float(odin_decorrelation_loss(X, Y)) == pytest.approx(RHO)
    assert float(odin_decorrelation_loss(X.flip(0), Y)) == pytest.approx(RHO)  # |rho|: either sign costs
    w_q, w_l = torch.tensor([[1.0, 2.0, -1.0]]), torch.tensor([[3.0, -1.0, 2.0]])
    assert float(odin_orthogonality_loss(w_q, w_l)) == pytest.approx(abs(3 - 2 - 2))
    assert float(odin_orthogonality_loss(w_q, torch.tensor([[2.0, -1.0, 0.0]]))) == 0.0
    total, terms = odin_regulariser(X.flip(0), X, Y, w_q, w_l,
                                    weights={"length": 1.0, "decorrelation": 2.0, "orthogonality": 3.0})
    assert terms == pytest.approx({"length": -RHO, "decorrelation": RHO, "orthogonality": 1.0})
    assert float(total) == pytest.approx(-RHO + 2 * RHO + 3 * 1.0)


def test_odin_gradients_move_each_head_its_way():
    quality, length = X.flip(0).clone().requires_grad_(), X.flip(0).clone().requires_grad_()
    total, _ = odin_regulariser(quality, length, Y, torch.zeros(1, 3), torch.zeros(1, 3))
    total.backward()
    # Both heads start anti-correlated with length; one small step down the loss turns the length head
    # toward length and brings the quality head nearer to no correlation.
    with torch.no_grad():
        length_after, quality_after = length - 0.5 * length.grad, quality - 0.5 * quality.grad
    assert float(pearson(length_after, Y)) > float(pearson(length.detach(), Y))
    assert abs(float(pearson(quality_after, Y))) < abs(float(pearson(quality.detach(), Y)))


def test_soft_targets_are_the_bradley_terry_cross_entropy_by_hand():
    # Two comparisons in one group: P(0 beats 1) = 0.8, P(2 beats 1) = 0.6.
    rewards = torch.tensor([0.9, 0.1, 0.4])
    loss = grouped_ranking_loss(rewards, torch.tensor([0, 2]), torch.tensor([1, 1]), torch.tensor([0, 0]), 1,
                                targets=torch.tensor([0.8, 0.6]))
    first = 0.8 * neg_log_sigmoid(0.9 - 0.1) + 0.2 * neg_log_sigmoid(0.1 - 0.9)
    second = 0.6 * neg_log_sigmoid(0.4 - 0.1) + 0.4 * neg_log_sigmoid(0.1 - 0.4)
    assert loss.item() == pytest.approx((first + second) / 2, rel=1e-6)


def test_targets_of_one_are_the_hard_loss_exactly():
    rewards = torch.tensor([0.3, -0.2, 1.1, 0.4])
    args = (torch.tensor([0, 2]), torch.tensor([1, 3]), torch.tensor([0, 1]), 2)
    hard = grouped_ranking_loss(rewards, *args)
    assert grouped_ranking_loss(rewards, *args, targets=torch.ones(2)).item() == pytest.approx(hard.item(), rel=1e-7)


def test_a_soft_target_is_minimised_at_its_logit_not_at_infinity():
    # The hard loss keeps pushing the margin up; a target of 0.75 stops at logit(0.75) = log 3.
    margin = torch.tensor([0.0], requires_grad=True)
    optimiser = torch.optim.SGD([margin], lr=1.0)
    for _ in range(500):
        optimiser.zero_grad()
        rewards = torch.cat([margin, torch.zeros(1)])
        grouped_ranking_loss(rewards, torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), 1,
                             targets=torch.tensor([0.75])).backward()
        optimiser.step()
    assert margin.item() == pytest.approx(math.log(3), abs=1e-3)


def test_weights_of_one_are_the_unweighted_loss_exactly():
    rewards = torch.tensor([0.3, -0.2, 1.1, 0.4, 0.0, 0.9])
    args = (torch.tensor([0, 2, 5]), torch.tensor([1, 3, 4]), torch.tensor([0, 1, 2]), 3)
    plain = grouped_ranking_loss(rewards, *args)
    assert torch.equal(grouped_ranking_loss(rewards, *args, weights=torch.ones(3)), plain)


def test_group_weights_give_the_weighted_mean_of_groups_by_hand():
    # Group 0 (weight 1): one comparison, margin 0.8. Group 1 (weight 0.5, a machine record): two
    # comparisons, margins 0.3 and -0.4, averaged. Group 2 (weight 0.25): all tied, no comparisons:
    # it is left out of the normaliser as well.
    rewards = torch.tensor([1.0, 0.2, 0.5, 0.2, 0.9, 7.0])
    loss = grouped_ranking_loss(rewards, torch.tensor([0, 2, 2]), torch.tensor([1, 3, 4]), torch.tensor([0, 1, 1]), 3,
                                weights=torch.tensor([1.0, 0.5, 0.25]))
    group0 = neg_log_sigmoid(0.8)
    group1 = (neg_log_sigmoid(0.3) + neg_log_sigmoid(-0.4)) / 2
    assert loss.item() == pytest.approx((1.0 * group0 + 0.5 * group1) / 1.5, rel=1e-6)


def test_a_batch_weighted_to_zero_has_no_loss_and_no_gradient():
    rewards = torch.tensor([0.1, 0.4], requires_grad=True)
    loss = grouped_ranking_loss(rewards, torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), 1, weights=torch.zeros(1))
    loss.backward()
    assert loss.item() == 0.0 and rewards.grad.abs().sum().item() == 0.0
