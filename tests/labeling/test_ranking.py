import pytest

from labeling.ranking import RankingError, ranking_pairs, ranking_validate


def test_k4_with_tie_gives_five_pairs():
    ranking = [[3], [1, 4], [2]]
    assert sorted(ranking_pairs(ranking)) == sorted([(3, 1), (3, 4), (3, 2), (1, 2), (4, 2)])


def test_strict_k4_gives_six_pairs_all_ties_none():
    assert len(ranking_pairs([[1], [2], [3], [4]])) == 6
    assert ranking_pairs([[1, 2, 3]]) == []


@pytest.mark.parametrize("ranking,message", [
    ([[1], [2]], "missing responses [3]"),
    ([[1], [2], [3], [9]], "unknown responses [9]"),
    ([[1], [1, 2, 3]], "appears twice"),
    ([[1], []], "non-empty"),
    ([["1"], [2, 3]], "integers"),
    ([[True], [2, 3]], "integers"),
    ("1>2", "non-empty list"),
])
def test_validation_errors(ranking, message):
    with pytest.raises(RankingError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ranking_validate(ranking, [1, 2, 3])


def test_validate_returns_groups():
    assert ranking_validate([[2, 1], [3]], [1, 2, 3]) == [[2, 1], [3]]
