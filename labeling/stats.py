"""Pure statistics for label quality and consensus: no database, no Django, testable by hand.

Outcomes of a response pair (a, b) with a < b are +1 (a preferred), -1 (b preferred) or 0 (tie).
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from itertools import combinations
from typing import Hashable, Iterable, Mapping, Sequence

import numpy as np

Votes = Mapping[Hashable, Mapping[Hashable, int]]  # item -> {annotator: outcome}


@dataclass(frozen=True)
class Share:
    hits: int
    total: int

    @property
    def rate(self) -> float | None:
        return self.hits / self.total if self.total else None


def ranking_outcomes(ranking: Sequence[Sequence[int]]) -> dict[tuple[int, int], int]:
    """{(a, b) with a < b: outcome} for every two responses of a tie-group ranking."""
    position = {rid: index for index, group in enumerate(ranking) for rid in group}
    out = {}
    for a, b in combinations(sorted(position), 2):
        out[(a, b)] = (position[a] < position[b]) - (position[a] > position[b])
    return out


def pairwise_agreement(votes: Votes) -> tuple[Share, dict[Hashable, Share]]:
    """InstructGPT agreement: over items judged by 2+ annotators, the share of annotator pairs who
    prefer the same response. Pairs where either annotator called a tie are left out, as in the paper.
    Returns the overall share and each annotator's share against the others."""
    hits = total = 0
    per: dict[Hashable, list[int]] = defaultdict(lambda: [0, 0])
    for by_annotator in votes.values():
        decided = [(who, o) for who, o in by_annotator.items() if o != 0]
        for (x, ox), (y, oy) in combinations(decided, 2):
            same = int(ox == oy)
            hits, total = hits + same, total + 1
            for who in (x, y):
                per[who][0] += same
                per[who][1] += 1
    return Share(hits, total), {who: Share(h, t) for who, (h, t) in per.items()}


def krippendorff_alpha_ordinal(units: Iterable[Sequence[float]]) -> float | None:
    """Krippendorff's alpha with the ordinal metric, from the coincidence matrix (Krippendorff 2011).

    Each unit is the list of values its coders gave; units with fewer than two values are not pairable.
    None when there is nothing to compare or every value is the same (expected disagreement is zero).
    """
    pairable = [list(u) for u in units if len(u) >= 2]
    values = sorted({v for u in pairable for v in u})
    if len(values) < 2:
        return None if not pairable else (1.0 if values else None)
    index = {v: i for i, v in enumerate(values)}
    size = len(values)
    coincidence = np.zeros((size, size))
    for unit in pairable:
        m = len(unit)
        for i, j in ((i, j) for i in range(m) for j in range(m) if i != j):
            coincidence[index[unit[i]], index[unit[j]]] += 1.0 / (m - 1)
    marginals = coincidence.sum(axis=1)
    n = marginals.sum()
    cumulative = np.concatenate([[0.0], np.cumsum(marginals)])
    delta = np.zeros((size, size))
    for c in range(size):
        for k in range(c + 1, size):
            # Ordinal distance: the mass of values between c and k, counting the ends by half.
            delta[c, k] = delta[k, c] = (cumulative[k + 1] - cumulative[c] - (marginals[c] + marginals[k]) / 2) ** 2
    observed = (coincidence * delta).sum()
    expected = (np.outer(marginals, marginals) * delta).sum()
    if expected == 0:
        return None
    return float(1.0 - (n - 1) * observed / expected)


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float | None:
    """Cohen's kappa for two raters over the same items; None when chance agreement is total."""
    if len(first) != len(second):
        raise ValueError("both raters must label the same items")
    n = len(first)
    if n == 0:
        return None
    observed = sum(a == b for a, b in zip(first, second)) / n
    left, right = Counter(first), Counter(second)
    expected = sum(left[label] * right[label] for label in left) / (n * n)
    if expected == 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def wilson_interval(hits: int, total: int, z: float = 1.96) -> tuple[float, float] | None:
    """95% Wilson score interval of a proportion; it behaves at 0, 1 and small n, unlike the normal one."""
    if total == 0:
        return None
    p = hits / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Consensus:
    winner: int | None  # +1, -1, or None when no strict majority
    agreement: float  # votes for the most chosen outcome (ties count as votes) over all votes
    votes: int
    unanimous: bool


def majority_vote(outcomes: Sequence[int]) -> Consensus:
    """Majority over one response pair's votes. A tie vote is a vote, so it can block a majority."""
    counts = Counter(outcomes)
    total = len(outcomes)
    if not total:
        return Consensus(None, 0.0, 0, False)
    best, best_count = max(counts.items(), key=lambda kv: (kv[1], kv[0] != 0))
    winner = best if best != 0 and best_count * 2 > total else None
    return Consensus(winner, best_count / total, total, len(counts) == 1 and best != 0)


# --- Bradley-Terry, as Chatbot Arena computes it -----------------------------------------------

ELO_SCALE, ELO_BASE, ELO_INIT = 400.0, 10.0, 1000.0
# Arena fits an unregularised logistic regression. A player who never lost has an infinite MLE,
# so a whisper of pseudo-ties between players who met keeps every score finite without moving others.
PSEUDO_TIE = 1e-3


def bradley_terry(
    battles: Sequence[tuple[int, int, float]], players: int, *, iterations: int = 2000, tol: float = 1e-10,
) -> np.ndarray:
    """Maximum-likelihood Bradley-Terry ratings on the Elo scale (mean 1000).

    battles: (a, b, score of a) with score 1 (a won), 0.5 (tie) or 0 (b won); ties are half wins,
    as Arena's doubling of tie rows amounts to. Solved with Hunter's MM algorithm.
    """
    if players == 0:
        return np.zeros(0)
    array = np.asarray(battles, dtype=float).reshape(-1, 3)
    return _bt_fit(array[:, 0].astype(int), array[:, 1].astype(int), array[:, 2], players, iterations, tol)


def _bt_fit(a: np.ndarray, b: np.ndarray, score: np.ndarray, players: int, iterations: int, tol: float) -> np.ndarray:
    wins = np.zeros((players, players))
    np.add.at(wins, (a, b), score)
    np.add.at(wins, (b, a), 1.0 - score)
    met = (wins + wins.T) > 0
    wins = wins + PSEUDO_TIE * met
    games = wins + wins.T
    total_wins = wins.sum(axis=1)
    strength = np.ones(players)
    for _ in range(iterations):
        denominator = (games / (strength[:, None] + strength[None, :])).sum(axis=1)
        updated = np.where(denominator > 0, total_wins / np.where(denominator > 0, denominator, 1), strength)
        updated = updated / np.exp(np.log(np.maximum(updated, 1e-300)).mean())
        if np.max(np.abs(updated - strength)) < tol:
            strength = updated
            break
        strength = updated
    return ELO_SCALE * np.log(strength) / math.log(ELO_BASE) + ELO_INIT


def bradley_terry_bootstrap(
    battles: Sequence[tuple[int, int, float]], players: int, *, rounds: int = 200, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ratings, lower, upper): the MLE and a 95% interval from refitting on battles resampled with
    replacement, the percentile bootstrap Chatbot Arena publishes."""
    if players == 0:  # e.g. every battle was between two responses of one source
        return np.zeros(0), np.zeros(0), np.zeros(0)
    array = np.asarray(battles, dtype=float).reshape(-1, 3)
    a, b, score = array[:, 0].astype(int), array[:, 1].astype(int), array[:, 2]
    ratings = _bt_fit(a, b, score, players, 2000, 1e-10)
    if len(array) == 0 or rounds <= 0:
        return ratings, ratings.copy(), ratings.copy()
    rng = np.random.default_rng(seed)
    samples = np.empty((rounds, players))
    for r in range(rounds):
        pick = rng.integers(0, len(array), len(array))
        samples[r] = _bt_fit(a[pick], b[pick], score[pick], players, 500, 1e-8)
    lower, upper = np.percentile(samples, [2.5, 97.5], axis=0)
    return ratings, lower, upper


def agreement_over_time(votes: Mapping[Hashable, Mapping[Hashable, tuple[int, Hashable]]]) -> dict[Hashable, Share]:
    """Pairwise agreement bucketed by period: an annotator pair counts in the period of the later
    of its two votes, so a period shows how well new labels agree with what came before."""
    buckets: dict[Hashable, list[int]] = defaultdict(lambda: [0, 0])
    for by_annotator in votes.values():
        decided = [(o, period) for o, period in by_annotator.values() if o != 0]
        for (ox, px), (oy, py) in combinations(decided, 2):
            bucket = buckets[max(px, py)]
            bucket[0] += int(ox == oy)
            bucket[1] += 1
    return {period: Share(h, t) for period, (h, t) in sorted(buckets.items())}
