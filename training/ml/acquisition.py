"""Acquisition scores: how much one more human label on a task is worth to the reward model, for the
queue's acquisition orders (Project.queue_order). Higher is labeled first.

- uncertainty: 1 - |2p - 1| with p = sigmoid(r_a - r_b) from the promoted reward model's rewards; 1 when
  the model is at a coin flip, 0 when it is sure. A K-way task takes the mean over its C(K,2) pairs.
- disagreement: the variance of p across a small ensemble of logistic heads on frozen embeddings, each
  fitted on a bootstrap resample of the labeled pairs (query by committee, Seung et al. 1992; the
  heads' spread is where the labels so far leave the model undetermined, which plain uncertainty
  confuses with pairs that are simply close). Mean over a task's pairs as above.

A head scores a pair by p(a over b) = sigmoid(w . (e_a - e_b)): no intercept, so swapping a and b gives
1 - p and the order the responses are shown in cannot matter. Fitted by Newton's method on the L2-penalised
log loss (a few steps at embedding size 384), so it is deterministic and fast on a CPU.

numpy for the scores, torch only for the embeddings (embed_and_score); no Django.
"""
from __future__ import annotations

from itertools import combinations
from typing import Sequence

import numpy as np

HEADS = 5
L2 = 1e-2
NEWTON_STEPS = 25


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for any x, unlike 1/(1+exp(-x))


def _task_pairs(sizes: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (i, j), i < j, of every task's rows in the flat row order: (task index, row i, row j)."""
    task, left, right, start = [], [], [], 0
    for t, k in enumerate(sizes):
        for i, j in combinations(range(start, start + k), 2):
            task.append(t)
            left.append(i)
            right.append(j)
        start += k
    return np.asarray(task, dtype=np.int64), np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64)


def _mean_per_task(values: np.ndarray, task: np.ndarray, n_tasks: int) -> np.ndarray:
    counts = np.bincount(task, minlength=n_tasks)
    sums = np.bincount(task, weights=values, minlength=n_tasks)
    return np.divide(sums, counts, out=np.zeros(n_tasks), where=counts > 0)


def uncertainty_scores(rewards: Sequence[Sequence[float]]) -> np.ndarray:
    """rewards: per task, its responses' rewards (K >= 2). Shape: -> [tasks], in [0, 1]."""
    sizes = [len(r) for r in rewards]
    flat = np.asarray([x for r in rewards for x in r], dtype=np.float64)
    task, left, right = _task_pairs(sizes)
    p = _sigmoid(flat[left] - flat[right])
    return _mean_per_task(1.0 - np.abs(2.0 * p - 1.0), task, len(sizes))


def head_fit(diffs: np.ndarray, *, l2: float = L2, steps: int = NEWTON_STEPS) -> np.ndarray:
    """One logistic head on winner-minus-loser embedding differences (every row's label is 1).
    Shape: diffs [N, D] -> w [D]."""
    x = np.asarray(diffs, dtype=np.float64)
    n, d = x.shape
    w = np.zeros(d)
    for _ in range(steps):
        p = _sigmoid(x @ w)  # P(winner over loser)
        grad = -(x.T @ (1.0 - p)) / n + l2 * w
        hess = (x.T * (p * (1.0 - p))) @ x / n + l2 * np.eye(d)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def ensemble_fit(diffs: np.ndarray, *, heads: int = HEADS, seed: int = 0, l2: float = L2) -> np.ndarray:
    """`heads` heads, each on a bootstrap resample (with replacement) of the labeled pairs.
    Shape: diffs [N, D] -> weights [heads, D]."""
    diffs = np.asarray(diffs, dtype=np.float64)
    if len(diffs) == 0:
        raise ValueError("no labeled pairs to fit the ensemble on")
    rng = np.random.default_rng(seed)
    return np.stack([head_fit(diffs[rng.integers(0, len(diffs), len(diffs))], l2=l2) for _ in range(heads)])


def pair_probabilities(weights: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """p(a over b) under each head. Shapes: weights [H, D] (or [D]), a, b [N, D] -> [N, H] (or [N])."""
    return _sigmoid((np.asarray(a) - np.asarray(b)) @ np.asarray(weights).T)


def disagreement_scores(weights: np.ndarray, embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """embeddings: per task, its responses' embeddings [K, D]. The variance over heads of p, mean over
    the task's pairs. Shape: -> [tasks], in [0, 1/4]."""
    sizes = [len(e) for e in embeddings]
    flat = np.concatenate([np.asarray(e, dtype=np.float64) for e in embeddings]) if embeddings else np.zeros((0, 1))
    task, left, right = _task_pairs(sizes)
    p = pair_probabilities(weights, flat[left], flat[right])
    return _mean_per_task(p.var(axis=1), task, len(sizes))


def ranking_diffs(embeddings: np.ndarray, ranking: Sequence[Sequence[int]]) -> np.ndarray:
    """The winner-minus-loser differences of one ranked group: ranking is tie groups of row indices,
    best first; every pair across two groups is a labeled pair, tied rows give none. Shape: -> [P, D]."""
    rows = [embeddings[w] - embeddings[lo] for g, better in enumerate(ranking)
            for worse in ranking[g + 1:] for w in better for lo in worse]
    return np.stack(rows) if rows else np.zeros((0, embeddings.shape[1]))


def embed_and_score(model, tokenizer, prompts: Sequence[str], responses: Sequence[str], *,
                    batch_size: int = 32, max_length: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """One forward pass of a reward model over (prompt, response) pairs: its rewards and the pooled
    state its head reads (the frozen embedding the ensemble's heads use: the features the reward model
    itself scores from, pooled as it pools). Same truncation as training. Shapes: -> [N], [N, hidden]."""
    import torch

    from training.ml.reward.data import PairEncoder, collate, pad_id_of

    if len(prompts) != len(responses):
        raise ValueError("prompts and responses differ in length")
    hidden = model.head.in_features
    if not prompts:
        return np.zeros(0), np.zeros((0, hidden))
    device = next(model.parameters()).device
    seqs = PairEncoder(tokenizer, max_length, add_eos=model.pooling == "last").encode(prompts, responses)
    rewards, pooled = np.zeros(len(seqs)), np.zeros((len(seqs), hidden))
    captured: list[torch.Tensor] = []
    hook = model.head.register_forward_hook(lambda _module, inputs, _output: captured.append(inputs[0]))
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i].input_ids))  # longest first: little padding
    try:
        model.eval()
        with torch.no_grad():
            for s in range(0, len(order), batch_size):
                idx = order[s:s + batch_size]
                batch = collate([seqs[i] for i in idx], pad_id_of(tokenizer), device)
                captured.clear()
                out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
                rewards[idx] = out.float().cpu().numpy()
                pooled[idx] = captured[0].float().cpu().numpy()
    finally:
        hook.remove()
    return rewards, pooled
