"""Tiny random backbones for the reward model's tests, built once per test module from a fixed seed:
some tests train a few steps and compare two scores, which a backbone drawn from whatever random state
the tests before left behind can turn either way."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.tiny_models import tiny_bert, tiny_llama


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return tiny_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return tiny_llama(tmp_path_factory.mktemp("llama"))
