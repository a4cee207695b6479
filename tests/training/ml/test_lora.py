"""training.ml.lora: LoRA SFT and DPO save adapters on their parent, the reference is the parent with
the adapters off (no second copy), adapter chains load and merge, and a merged folder is a plain model.
(PPO: test_ppo_lora.py; the reward model: test_reward_lora.py.)"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.tiny_models import tiny_llama
from training.ml import dpo as dpo_module
from training.ml.dpo import DPOConfig, train_dpo
from training.ml.checkpoint import adapter_merge
from training.ml.lora import BASE_FILE, LoraSettings, adapter_chain, adapters_disabled, is_adapter_dir, lora_apply
from training.ml.sft import SFTConfig, train_sft
from training.ml.text import forward_logits, load_policy, token_logprobs

torch.set_num_threads(1)
DEMOS = [{"prompt": f"say {i}", "response": "ok " * (1 + i % 3)} for i in range(8)]
PAIRS = [{"prompt": f"pick {i}", "chosen": "yes", "rejected": "no!"} for i in range(8)]


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return tiny_llama(tmp_path_factory.mktemp("lora-parent"))


def logps(model, tokenizer, text: str = "hello there, how are you") -> torch.Tensor:
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    model.eval()
    with torch.no_grad():
        return token_logprobs(forward_logits(model, ids, torch.ones_like(ids)), ids)[0]


def test_lora_sft_saves_only_adapters_on_its_parent_and_learns(parent: Path, tmp_path: Path) -> None:
    config = SFTConfig(epochs=4, lr=1e-2, batch_size=4, micro_batch_size=4, lora_r=4, warmup_ratio=0.0, precision="fp32")
    metrics = train_sft(parent, DEMOS, tmp_path / "sft", config)
    assert metrics["history"][-1]["loss"] < metrics["history"][0]["loss"]
    out = tmp_path / "sft"
    assert is_adapter_dir(out) and not (out / "model.safetensors").exists()
    assert json.loads((out / BASE_FILE).read_text())["base"] == str(parent.resolve())
    adapters = load_file(str(out / "adapter_model.safetensors"))
    assert adapters and all("lora_" in k for k in adapters)
    adaptation = metrics["adaptation"]
    assert 0 < adaptation["trainable_parameters"] < 0.2 * adaptation["total_parameters"]
    # Loaded as a policy, it is the parent plus the adapters: different outputs, same tokenizer.
    tuned, tokenizer = load_policy(out)
    base, _ = load_policy(parent)
    assert not torch.allclose(logps(tuned, tokenizer), logps(base, tokenizer))


def test_lora_dpo_reference_is_the_parent_with_adapters_off_and_no_second_copy(parent: Path, tmp_path: Path, monkeypatch) -> None:
    loads = []
    real = dpo_module.load_policy
    monkeypatch.setattr(dpo_module, "load_policy", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    config = DPOConfig(beta=0.5, epochs=4, lr=5e-3, batch_size=4, micro_batch_size=2, warmup_ratio=0.0,
                       precision="fp32", lora_r=8, lora_alpha=16)
    metrics = train_dpo(parent, PAIRS, tmp_path / "dpo", config)
    assert loads == [parent]  # the policy only: the reference is not loaded again
    assert metrics["history"][-1]["accuracy"] == 1.0 and metrics["history"][-1]["loss"] < metrics["history"][0]["loss"]
    assert is_adapter_dir(tmp_path / "dpo")

    # The trained adapters, switched off, give exactly the parent's log-probabilities.
    from peft import PeftModel

    plain, tokenizer = load_policy(parent)
    expected = logps(plain, tokenizer)
    wrapped = PeftModel.from_pretrained(load_policy(parent)[0], tmp_path / "dpo")
    with adapters_disabled(wrapped):
        assert torch.allclose(logps(wrapped, tokenizer), expected, atol=1e-6)
    assert not torch.allclose(logps(wrapped, tokenizer), expected, atol=1e-4)


def test_full_dpo_needs_no_second_copy_either(parent: Path, tmp_path: Path, monkeypatch) -> None:
    loads = []
    real = dpo_module.load_policy
    monkeypatch.setattr(dpo_module, "load_policy", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    config = DPOConfig(beta=0.5, epochs=1, lr=1e-3, batch_size=4, micro_batch_size=2, warmup_ratio=0.0, precision="fp32")
    metrics = train_dpo(parent, PAIRS, tmp_path / "full", config)
    assert loads == [parent]
    # Before the first update the policy is the reference: the first step's implicit rewards are 0.
    assert metrics["history"][0]["chosen_reward"] == pytest.approx(0.0, abs=1e-6)
    assert (tmp_path / "full" / "model.safetensors").exists() and not is_adapter_dir(tmp_path / "full")


def test_adapter_chains_load_and_merge_into_a_plain_folder(parent: Path, tmp_path: Path) -> None:
    config = SFTConfig(epochs=2, lr=1e-2, batch_size=4, micro_batch_size=4, lora_r=4, warmup_ratio=0.0, precision="fp32")
    train_sft(parent, DEMOS, tmp_path / "one", config)
    train_sft(tmp_path / "one", DEMOS[::-1], tmp_path / "two", config)  # LoRA on a LoRA version
    assert adapter_chain(tmp_path / "two") == [parent, tmp_path / "one", tmp_path / "two"]
    two, tokenizer = load_policy(tmp_path / "two")
    one, _ = load_policy(tmp_path / "one")
    assert not torch.allclose(logps(two, tokenizer), logps(one, tokenizer))

    merged = adapter_merge(tmp_path / "two", tmp_path / "merged")
    assert not is_adapter_dir(merged) and (merged / "model.safetensors").exists()
    plain, _ = load_policy(merged)
    assert torch.allclose(logps(plain, tokenizer), logps(two, tokenizer), atol=1e-5)
    with pytest.raises(FileExistsError):
        adapter_merge(tmp_path / "two", tmp_path / "merged")  # never over an existing folder


def test_named_target_modules_and_gradient_checkpointing(parent: Path) -> None:
    model, tokenizer = load_policy(parent)
    wrapped = lora_apply(model, LoraSettings(lora_r=2, lora_target_modules="q_proj, v_proj", gradient_checkpointing=True))
    adapted = {name.split(".")[-1] for name, module in wrapped.named_modules() if hasattr(module, "lora_A")}
    assert adapted == {"q_proj", "v_proj"}
    assert wrapped.base_model.model.is_activation_checkpointing
    wrapped.train()
    ids = torch.tensor([tokenizer("a b c d")["input_ids"]])
    wrapped(input_ids=ids, labels=ids).loss.backward()
    grads = [p.grad for n, p in wrapped.named_parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert not any(p.requires_grad for n, p in wrapped.named_parameters() if "lora_" not in n)


def test_quantized_bases_are_refused_clearly_where_they_cannot_work(parent: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs lora_r > 0"):
        train_dpo(parent, PAIRS, None, DPOConfig(quantize_base="4bit", device="cpu"))
    with pytest.raises(ValueError, match="needs a CUDA device"):
        train_sft(parent, DEMOS, tmp_path / "q", SFTConfig(quantize_base="4bit", lora_r=4, device="cpu"))
    with pytest.raises(ValueError, match="one of"):
        train_dpo(parent, PAIRS, None, DPOConfig(quantize_base="3bit", lora_r=4, device="cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: bitsandbytes 4-bit loading; runs in bench/gpu_check.sh")
def test_qlora_dpo_trains_adapters_on_a_4bit_base(parent: Path, tmp_path: Path) -> None:
    config = DPOConfig(beta=0.5, epochs=2, lr=5e-3, batch_size=4, micro_batch_size=2, warmup_ratio=0.0, lora_r=4,
                       quantize_base="4bit", device="cuda")
    metrics = train_dpo(parent, PAIRS, tmp_path / "qlora", config)
    assert is_adapter_dir(tmp_path / "qlora") and metrics["history"][-1]["loss"] < metrics["history"][0]["loss"]
