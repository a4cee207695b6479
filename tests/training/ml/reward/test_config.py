"""RewardConfig: every field explains itself, and the defaults a run starts from."""
from __future__ import annotations

import dataclasses

from training.ml.reward.config import RewardConfig


def test_config_fields_all_have_help():
    for f in dataclasses.fields(RewardConfig):
        assert f.metadata.get("help"), f.name
    assert RewardConfig().max_length == 256 and RewardConfig().epochs == 1 and RewardConfig().dropout == 0.0
