"""Tiny inputs for the bench scripts: a random BERT and a trivially separable preference file."""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

from tests.tiny_models import tiny_bert

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))


@pytest.fixture
def bert_dir(tmp_path) -> Path:
    return tiny_bert(tmp_path / "bert")


@pytest.fixture
def separable_file(tmp_path):
    """Writes n {id, prompt, chosen, rejected, source} records (shared dataset shape) to a .jsonl.gz."""
    def write(n: int) -> Path:
        path = tmp_path / "pairs.jsonl.gz"
        with gzip.open(path, "wt", encoding="utf-8") as f:
            for i in range(n):
                f.write(json.dumps({"id": f"t/{i}", "prompt": f"question {i}?", "chosen": "good good good",
                                    "rejected": "bad bad", "source": "t"}) + "\n")
        return path
    return write
