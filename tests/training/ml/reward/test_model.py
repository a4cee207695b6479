"""The reward model's pooling: padding changes no score, 'response' pooling averages the response's
tokens only, an unknown pooling is refused. Tiny random models, offline, no DB."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from training.ml.modeling_pairwise_reward import pool
from training.ml.reward.artifact import score
from training.ml.reward.model import RewardModel

torch.set_num_threads(1)


def test_pooling_ignores_padding(bert_dir):
    model = RewardModel.from_backbone_path(bert_dir).eval()
    tok = AutoTokenizer.from_pretrained(bert_dir)
    alone = score(model, tok, ["hi"], ["short"], batch_size=1)
    padded = score(model, tok, ["hi", "a much longer prompt here"], ["short", "and a long response"], batch_size=2)
    assert padded[0] == pytest.approx(alone[0], abs=1e-5)


def test_response_pooling_averages_segment_one_only():
    hidden = torch.tensor([[[1.0], [3.0], [10.0], [20.0], [99.0]],   # prompt 1, 3; response 10, 20; pad
                           [[2.0], [4.0], [6.0], [0.0], [0.0]]])     # no segment-1 tokens: every token
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    types = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]])
    assert pool(hidden, mask, "response", types).squeeze(-1).tolist() == [15.0, 4.0]
    assert pool(hidden, mask, "mean", types).squeeze(-1).tolist() == [8.5, 4.0]
    with pytest.raises(ValueError, match="pooling must be one of"):
        RewardModel(torch.nn.Linear(1, 1), "max")
