"""bench/reward_quality.py on a tiny model: one run per seed, each on its own split, pooled."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from training.ml.preference_file import read_preference_file
from training.ml.reward.data import groups_from_pairs, split_by_prompt

ROOT = Path(__file__).resolve().parents[2]


def test_seeds_hold_out_different_prompts_and_pool(tmp_path, bert_dir, separable_file):
    base, data = bert_dir, separable_file(60)
    subprocess.run([sys.executable, "bench/reward_quality.py", "--data", str(data), "--base", str(base),
                    "--max-length", "32", "--lr", "3e-3", "--seeds", "0,1", "--json", str(tmp_path / "out.json")],
                   cwd=ROOT, check=True, capture_output=True, timeout=300)
    out = json.loads((tmp_path / "out.json").read_text())
    runs = out["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    assert all(r["train_pairs"] + r["val_pairs"] == 60 for r in runs)
    groups = groups_from_pairs(read_preference_file(data))
    held_out = [{g["prompt"] for g in split_by_prompt(groups, 0.1, seed)[1]} for seed in (0, 1)]
    assert held_out[0] != held_out[1]
    assert [r["val_pairs"] for r in runs] == [len(h) for h in held_out]
    assert out["val_pairs"] == runs[0]["val_pairs"] + runs[1]["val_pairs"]
    pooled = sum(r["val_accuracy"] * r["val_pairs"] for r in runs) / out["val_pairs"]
    assert out["val_accuracy"] == pytest.approx(pooled)
