"""How sure a reward model is, and whether it should be: its pick among a task's responses with a
probability, its prediction on each pair a person decided, and the expected calibration error of
those predictions. Pure Python (no Django, no torch): the suggestion service and the online-accuracy
selector call it.

A reward model's scores give, by Bradley-Terry, P(i beats j) = sigmoid(r_i - r_j), and over K
responses P(i is best) = softmax(r)_i (Plackett-Luce's first choice), which is the same number when
K = 2.
"""
from __future__ import annotations

import math
from typing import Hashable, Sequence

from labeling.ranking import ranking_pairs

ECE_BINS = 10


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def best_of(rewards: Sequence[float]) -> tuple[int, float]:
    """(index of the highest reward, P(it is best) = softmax(r)_index). Shape: rewards [K] -> (int, float)."""
    if not rewards:
        raise ValueError("no rewards to pick from")
    top = max(range(len(rewards)), key=lambda i: rewards[i])
    norm = sum(math.exp(r - rewards[top]) for r in rewards)
    return top, 1.0 / norm


# Two rewards closer than this tie: the same text scored twice in one batch can differ in the last
# float32 bits (kernels reduce in a batch-position-dependent order), and that is no preference.
REWARD_TIE_TOLERANCE = 1e-5


def reward_ranking(ids: Sequence[Hashable], rewards: Sequence[float]) -> list[list[Hashable]]:
    """Tie groups of ids, highest reward first; rewards within REWARD_TIE_TOLERANCE of their group's
    highest tie (a reward model has no "unsure" band of its own: how sure it is lies in best_of's
    probability). Shape: ids [K], rewards [K] -> [[id, ...], ...]."""
    if len(ids) != len(rewards):
        raise ValueError("ids and rewards differ in length")
    groups: list[tuple[float, list[Hashable]]] = []
    for i in sorted(range(len(ids)), key=lambda i: -rewards[i]):
        if groups and groups[-1][0] - rewards[i] <= REWARD_TIE_TOLERANCE:
            groups[-1][1].append(ids[i])
        else:
            groups.append((rewards[i], [ids[i]]))
    return [members for _, members in groups]


def pair_predictions(scores: dict[Hashable, float], ranking: Sequence[Sequence[Hashable]]) -> list[tuple[float, bool]]:
    """For every pair the person decided (labeling.ranking.ranking_pairs: ties decide none), the
    model's confidence in the side it prefers and whether the person chose that side:

        p = sigmoid(r_w - r_l)  (w the person's winner),   confidence = max(p, 1 - p),   hit = p > 0.5

    Equal rewards (p = 0.5) pick no side, so they count as a miss at confidence 0.5. A pair whose
    response has no score is left out. Shape: scores {response: reward}, ranking [[response, ...], ...]
    best first -> [(confidence in [0.5, 1], hit)]."""
    out = []
    for winner, loser in ranking_pairs([list(tie) for tie in ranking]):
        if winner in scores and loser in scores:
            p = sigmoid(scores[winner] - scores[loser])
            out.append((max(p, 1.0 - p), p > 0.5))
    return out


def expected_calibration_error(predictions: Sequence[tuple[float, bool]], bins: int = ECE_BINS) -> float | None:
    """ECE over equal-width bins of the confidence on [0, 1] (Guo et al. 2017):

        ECE = sum_b (n_b / N) * | acc_b - conf_b |

    acc_b the share of hits and conf_b the mean confidence of the predictions in bin b (a confidence
    of exactly 1 falls in the last bin). None without predictions. Shape: [(confidence, hit)] -> float."""
    if not predictions:
        return None
    counts, hits, confidence = [0] * bins, [0] * bins, [0.0] * bins
    for conf, hit in predictions:
        b = min(int(conf * bins), bins - 1)
        counts[b] += 1
        hits[b] += bool(hit)
        confidence[b] += conf
    n = len(predictions)
    return sum(counts[b] / n * abs(hits[b] / counts[b] - confidence[b] / counts[b]) for b in range(bins) if counts[b])
