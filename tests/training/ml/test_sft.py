from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.tiny_models import tiny_llama
from training.ml.sft import SFTConfig, train_sft
from training.ml.text import collate, encode_example, lm_labels, load_policy

torch.set_num_threads(1)
DEMOS = [{"prompt": f"say hi {i}", "response": "hi"} for i in range(8)]


@pytest.fixture()
def parent(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return tiny_llama(tmp_path / "parent")


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_labels_cover_only_the_response_and_eos(parent: Path) -> None:
    _, tok = load_policy(parent)
    ids, n_prompt = encode_example(tok, "say hi", "hi", max_length=512)
    labels = lm_labels(collate([(ids, n_prompt), (ids[:-3], n_prompt)], tok.pad_token_id))
    assert (labels[0, :n_prompt] == -100).all()
    assert tok.decode(labels[0, n_prompt:]) == "hi" + tok.eos_token
    assert (labels[1, len(ids) - 3 :] == -100).all()  # padding carries no loss


def test_full_sft_changes_weights_lowers_loss_and_saves_config(parent: Path, tmp_path: Path) -> None:
    config = SFTConfig(epochs=8, lr=1e-2, batch_size=4, micro_batch_size=2, warmup_ratio=0.0, precision="fp32")
    seen = []
    metrics = train_sft(parent, DEMOS, tmp_path / "out", config, progress=lambda f, m: seen.append(f))
    losses = [h["loss"] for h in metrics["history"]]
    assert metrics["steps"] == 16 and seen[-1] == pytest.approx(1.0)
    assert losses[-1] < 0.5 * losses[0]
    before, after = weights(parent), weights(tmp_path / "out")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    saved = json.loads((tmp_path / "out" / "pairwise_config.json").read_text())
    assert saved["values"]["micro_batch_size"] == 2 and "memory" in saved["help"]["micro_batch_size"]
    model, tok = load_policy(tmp_path / "out")  # loads as a plain causal LM


def test_micro_batches_give_the_same_gradient_step_as_one_batch(parent: Path, tmp_path: Path) -> None:
    base = dict(epochs=1, lr=1e-3, batch_size=4, warmup_ratio=0.0, precision="fp32")
    train_sft(parent, DEMOS[:4], tmp_path / "a", SFTConfig(micro_batch_size=4, **base))
    train_sft(parent, DEMOS[:4], tmp_path / "b", SFTConfig(micro_batch_size=1, **base))
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
