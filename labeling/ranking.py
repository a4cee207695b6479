"""Rankings as ordered tie groups, and their expansion into pairwise preferences.

A ranking is a list of tie groups of response ids, best first: [[3], [1, 4], [2]] says 3 beats
1 and 4 (tied with each other), which both beat 2. Ties give no pair, so K responses give at
most C(K, 2) pairs.
"""
from __future__ import annotations

from itertools import combinations
from typing import Iterable


class RankingError(ValueError):
    pass


def ranking_validate(ranking: object, response_ids: Iterable[int]) -> list[list[int]]:
    """Return the ranking normalised to lists of ints, or raise RankingError saying what is wrong."""
    expected = set(response_ids)
    if not isinstance(ranking, list) or not ranking:
        raise RankingError("ranking must be a non-empty list of tie groups")
    groups: list[list[int]] = []
    seen: set[int] = set()
    for group in ranking:
        if not isinstance(group, list) or not group:
            raise RankingError("each tie group must be a non-empty list of response ids")
        ids = []
        for item in group:
            if isinstance(item, bool) or not isinstance(item, int):
                raise RankingError(f"response ids must be integers, got {item!r}")
            if item in seen:
                raise RankingError(f"response {item} appears twice")
            seen.add(item)
            ids.append(item)
        groups.append(ids)
    if seen != expected:
        missing, extra = sorted(expected - seen), sorted(seen - expected)
        parts = []
        if missing:
            parts.append(f"missing responses {missing}")
        if extra:
            parts.append(f"unknown responses {extra}")
        raise RankingError("ranking must cover exactly the task's responses: " + "; ".join(parts))
    return groups


def ranking_pairs(ranking: list[list[int]]) -> list[tuple[int, int]]:
    """(chosen, rejected) for every two responses in different tie groups."""
    return [
        (winner, loser)
        for better, worse in combinations(range(len(ranking)), 2)
        for winner in ranking[better]
        for loser in ranking[worse]
    ]
