from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.ml.convert import convert_gguf_to_hf, find_smollm2_gguf
from training.ml.text import load_policy, prompt_text

torch.set_num_threads(1)


def test_finds_the_gguf_inside_the_installed_package() -> None:
    path = find_smollm2_gguf()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    with pytest.raises(FileNotFoundError):
        find_smollm2_gguf("surely_not_an_installed_package_xyz")


def test_refuses_to_reuse_a_broken_folder(tmp_path: Path) -> None:
    (tmp_path / "broken").mkdir()
    with pytest.raises(RuntimeError):
        convert_gguf_to_hf(find_smollm2_gguf(), tmp_path / "broken")


def test_real_conversion_loads_generates_and_is_idempotent(tmp_path: Path) -> None:
    out = convert_gguf_to_hf(find_smollm2_gguf(), tmp_path / "smollm2")  # ~20 s: dequantises Q4_1
    assert (out / "model.safetensors").exists() and not list(tmp_path.glob(".tmp-*"))
    assert "quantization_config" not in (out / "config.json").read_text()
    model, tok = load_policy(out)
    ids = tok(prompt_text(tok, "What is the capital of France?"), return_tensors="pt", add_special_tokens=False)
    generated = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(generated[0, ids["input_ids"].shape[1] :])
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert convert_gguf_to_hf(find_smollm2_gguf(), out) == out
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp  # second call reused the folder
