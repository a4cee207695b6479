"""training.ml.vllm_backend: which sampler serves local candidate generation, and vLLM itself on CUDA."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from training.ml import vllm_backend
from training.ml.vllm_backend import BackendUnavailable, backend_choose

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
HAS_VLLM = importlib.util.find_spec("vllm") is not None


def _pretend_installed(monkeypatch, installed: bool) -> None:
    """The choice depends on whether the package can be imported; decide that, not the package."""
    real = importlib.util.find_spec
    monkeypatch.setattr(vllm_backend.importlib.util, "find_spec",
                        lambda name, *a: (object() if installed else None) if name == "vllm" else real(name, *a))


@pytest.mark.parametrize("installed, device, adapter, requested, expected, why", [
    (False, CUDA, False, "auto", "transformers", "vllm is not installed"),
    (True, CPU, False, "auto", "transformers", "needs a CUDA device, this run has cpu"),
    (True, CUDA, True, "auto", "transformers", "adapter version"),
    (True, CUDA, False, "auto", "vllm", "installed, CUDA"),
    (True, CUDA, False, "transformers", "transformers", "asked for"),
    (True, CUDA, False, "vllm", "vllm", "installed, CUDA"),
])
def test_backend_choice(monkeypatch, tmp_path, installed, device, adapter, requested, expected, why):
    _pretend_installed(monkeypatch, installed)
    if adapter:
        (tmp_path / "adapter_config.json").write_text("{}")
        (tmp_path / "pairwise_adapter.json").write_text("{}")
    backend, reason = backend_choose(model_dir=tmp_path, device=device, requested=requested)
    assert backend == expected and why in reason


def test_asking_for_vllm_where_it_cannot_run_says_why(monkeypatch, tmp_path):
    _pretend_installed(monkeypatch, True)
    with pytest.raises(BackendUnavailable, match="needs a CUDA device"):
        backend_choose(model_dir=tmp_path, device=CPU, requested="vllm")
    with pytest.raises(ValueError, match="one of auto, vllm, transformers"):
        backend_choose(model_dir=tmp_path, device=CPU, requested="tgi")


@pytest.mark.skipif(not (HAS_VLLM and torch.cuda.is_available()), reason="needs CUDA and vllm installed: runs in bench/gpu_check.sh")
def test_vllm_samples_k_distinct_candidates_per_prompt(tmp_path):
    from tests.tiny_models import tiny_llama

    folder = tiny_llama(tmp_path / "policy")
    out = vllm_backend.vllm_candidates(folder, ["Say hi.", "Count to three."], k=3, temperature=1.0, top_p=1.0,
                                       max_new_tokens=8, seed=0)
    assert len(out) == 2 and all(1 <= len(c) <= 3 and len(set(c)) == len(c) for c in out)
