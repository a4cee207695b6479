"""The reward model's losses, pure functions of tensors: InstructGPT's grouped ranking loss and ODIN's
three length regularisers."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def grouped_ranking_loss(
    rewards: torch.Tensor,
    winners: torch.Tensor,
    losers: torch.Tensor,
    group_index: torch.Tensor,
    num_groups: int,
    targets: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """InstructGPT's RM loss (section 3.5), one judgment = one batch element:

        loss(theta) = -1/C(K,2) * E_{(x, y_w, y_l) ~ D} [ log sigmoid(r(x, y_w) - r(x, y_l)) ]

    With soft targets (a label model's posterior p = P(y_w beats y_l), labeling.label_models) each
    comparison is the Bradley-Terry cross-entropy against p instead of against 1:

        -[ p * log sigmoid(r_w - r_l) + (1 - p) * log sigmoid(r_l - r_w) ]

    which is the hard loss exactly when p = 1, and pulls the margin toward logit(p), not to
    infinity, when the crowd was unsure.

    Each group's comparisons are averaged (normaliser = its number of non-tied comparisons,
    C(K,2) when nothing is tied), then groups are averaged. With per-group weights w_g (a machine
    annotator's judgments at the run's machine_weight, training.dataset) the mean is weighted:

        loss = sum_g w_g * L_g / sum_g w_g

    over the groups that have comparisons; all w_g = 1 is the plain mean, bit for bit (the weights
    are not applied at all then), and a batch whose weights are all 0 has loss 0 (no gradient).
    Under several processes each one's batch is weighted by its share of groups, not of weight: a
    weight moves a group against the others of its micro-batch, which is where the mix happens.

    Why it is cheap: every response was scored ONCE (K forward passes per judgment), and all
    C(K,2) comparisons are differences of those K rewards, so K=4 costs 4 passes for 6
    comparisons instead of 12 passes when each comparison is a separate pair.
    Why grouping: shuffled pairs from one ranking are strongly correlated, so a model sees each
    response K-1 times per epoch and overfits after one epoch; one gradient per judgment
    (weight 1, not C(K,2)) keeps the updates as independent as the judgments are.

    Shape:
        rewards: [N] one reward per response in the batch (float)
        winners, losers: [C] indices into rewards (long)
        group_index: [C] which judgment each comparison comes from, in [0, num_groups)
        targets: [C] P(winner beats loser) in [0.5, 1] (float), or None for 1 everywhere
        weights: [num_groups] w_g >= 0 (float), or None for 1 everywhere
        returns: [] scalar; groups without comparisons (all tied) are left out of the mean
    """
    margins = rewards[winners] - rewards[losers]
    per_pair = -F.logsigmoid(margins)
    if targets is not None:
        targets = targets.to(margins.dtype)
        per_pair = targets * per_pair - (1 - targets) * F.logsigmoid(-margins)
    totals = torch.zeros(num_groups, dtype=per_pair.dtype, device=per_pair.device)
    totals = totals.index_add(0, group_index, per_pair)
    counts = torch.zeros(num_groups, dtype=per_pair.dtype, device=per_pair.device)
    counts = counts.index_add(0, group_index, torch.ones_like(per_pair))
    has = counts > 0
    per_group = totals[has] / counts[has]
    if weights is None:
        return per_group.mean()
    w = weights.to(per_group.dtype)[has]
    return (w * per_group).sum() / w.sum().clamp_min(torch.finfo(per_group.dtype).tiny)


# ODIN (Chen et al. 2024, "ODIN: Disentangled Reward Mitigates Hacking in RLHF"): the ranking loss
# reads the sum of two heads, r = r_Q + r_L, and three regularisers decide which head takes length:
#
#     loss = ranking(r_Q + r_L) + w_L * (-rho(r_L, len)) + w_D * |rho(r_Q, len)| + w_O * |w_Q . w_L|
#
# so length, the feature raters reward most reliably and the cheapest one to learn, has a head of
# its own, and the quality head r_Q, which alone is saved and scores, is left with what length
# does not explain. Length is the response's TOKEN count (data.Encoded.response_tokens), not
# characters: tokens are what the model sees (its pooled state can only encode length in tokens)
# and what a policy inflates when it learns to pad, so that is the length the reward must not pay for.

ODIN_WEIGHTS = {"length": 1.0, "decorrelation": 1.0, "orthogonality": 1.0}  # w_L, w_D, w_O (the paper's lambdas, 1 each)


def pearson(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation over a batch, differentiable:

        rho(x, y) = sum_i (x_i - mean x)(y_i - mean y) / sqrt(sum_i (x_i - mean x)^2 * sum_i (y_i - mean y)^2)

    0 when either side is constant (fewer than 2 items, or one length for the whole batch): no
    evidence either way, so no gradient. Shape: x, y [N] -> [] scalar."""
    x, y = x.to(torch.promote_types(x.dtype, torch.float32)), y.to(torch.promote_types(y.dtype, torch.float32))
    if x.numel() < 2:
        return x.sum() * 0.0
    dx, dy = x - x.mean(), y - y.mean()
    denominator = torch.sqrt((dx * dx).sum() * (dy * dy).sum())
    if float(denominator.detach()) < eps:
        return x.sum() * 0.0
    return (dx * dy).sum() / denominator


def odin_length_loss(length_scores: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The length head follows length: loss = -rho(r_L, len), in [-1, 1], lowest when r_L rises with
    the token count. Shape: length_scores, lengths [N] -> [] scalar."""
    return -pearson(length_scores, lengths)


def odin_decorrelation_loss(quality_scores: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The quality head ignores length: loss = |rho(r_Q, len)|, in [0, 1], 0 when r_Q is uncorrelated
    with the token count. Shape: quality_scores, lengths [N] -> [] scalar."""
    return pearson(quality_scores, lengths).abs()


def odin_orthogonality_loss(quality_weight: torch.Tensor, length_weight: torch.Tensor) -> torch.Tensor:
    """The two heads read different directions of the pooled state: loss = |w_Q . w_L|, 0 when the
    weight vectors are orthogonal. Shape: quality_weight, length_weight [1, H] or [H] -> [] scalar."""
    return (quality_weight.reshape(-1).float() * length_weight.reshape(-1).float()).sum().abs()


def odin_regulariser(
    quality_scores: torch.Tensor, length_scores: torch.Tensor, lengths: torch.Tensor,
    quality_weight: torch.Tensor, length_weight: torch.Tensor, weights: dict[str, float] = ODIN_WEIGHTS,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The three ODIN terms, weighted and summed, and each term's value (for the run's history).
    Shape: quality_scores, length_scores, lengths [N]; quality_weight, length_weight [1, H] -> [] scalar."""
    terms = {
        "length": odin_length_loss(length_scores, lengths),
        "decorrelation": odin_decorrelation_loss(quality_scores, lengths),
        "orthogonality": odin_orthogonality_loss(quality_weight, length_weight),
    }
    total = sum(weights[k] * v for k, v in terms.items())
    return total, {k: float(v.detach()) for k, v in terms.items()}
