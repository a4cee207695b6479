"""training.plan: promotion decisions, round shapes and per-kind run params (pure functions)."""
from __future__ import annotations

import pytest
from training.plan import promotion_decide


def test_promotion_decide_margins():
    decide = promotion_decide
    assert decide(evaluation={"win_rate_vs_parent": 0.6}, margin=0.1)[0]
    assert not decide(evaluation={"win_rate_vs_parent": 0.59}, margin=0.1)[0]
    assert decide(evaluation={"win_rate_vs_parent": 0.5}, margin=0.0)[0]
    assert not decide(evaluation={}, margin=0.0)[0]
    assert decide(evaluation={"reward_mean": 1.0, "parent_reward_mean": 0.5}, margin=0.5, metric="reward")[0]
    assert not decide(evaluation={"reward_mean": 1.0, "parent_reward_mean": 0.6}, margin=0.5, metric="reward")[0]
    with pytest.raises(Exception):
        decide(evaluation={}, margin=0.0, metric="nope")

