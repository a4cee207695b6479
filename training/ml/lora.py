"""LoRA adapters (peft) for every trainer, and policy folders that are adapters.

A LoRA run trains low-rank adapters on the frozen weights of its parent (Hu et al. 2021):
    W x  ->  W x + (alpha / r) * B A x,   A: [r, d_in], B: [d_out, r], B starts at zero,
so the adapted model starts exactly at the parent, and only A and B get gradients and optimizer
state. With the adapters switched off the model *is* the parent, which is why DPO and PPO use the
policy with its adapters disabled as their reference instead of a second copy of the weights.

An adapter folder is peft's (adapter_config.json + adapter_model.safetensors) plus the tokenizer,
the run's config and metrics, and `pairwise_adapter.json` naming the folder of the model it adapts.
That base may itself be an adapter folder: loading resolves the chain, merging each adapter into
its base in memory, so a LoRA run on top of a LoRA version needs no merged copy on disk. Merging
into a plain folder is an explicit step (`adapter_merge`), which makes a new plain version.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

ADAPTER_FILE = "adapter_config.json"
BASE_FILE = "pairwise_adapter.json"
MAX_CHAIN = 32  # adapters on adapters; a loop in the chain is a corrupt registry, not a deep one


@dataclass
class LoraSettings:
    """The LoRA and memory options every trainer's config has (TrainerConfig extends this)."""

    lora_r: int = field(default=0, metadata={"help": "LoRA rank; 0 trains every weight. With r > 0 only the adapters train (policies are saved as adapters on their parent; reward models merged, so the folder loads as one model)."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator: the adapter's update is scaled by alpha / r."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the adapters' input."})
    lora_target_modules: str = field(default="all-linear", metadata={"help": "Modules that get adapters: 'all-linear' (every linear layer but the output head, as QLoRA recommends) or comma-separated names such as 'q_proj,v_proj'."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in the backward pass instead of keeping them: about 30% slower, far less activation memory at long sequence lengths."})
    quantize_base: str = field(default="", metadata={"help": "'4bit' (QLoRA: NF4 weights, bf16 compute) or '8bit' loading of the frozen base of a LoRA policy run, through bitsandbytes; CUDA only. Empty: full precision."})


def _targets(settings: LoraSettings) -> str | list[str]:
    names = settings.lora_target_modules.strip()
    return names if names == "all-linear" else [n.strip() for n in names.split(",") if n.strip()]


def lora_apply(model: PreTrainedModel, settings: LoraSettings, task_type: str = "CAUSAL_LM") -> torch.nn.Module:
    """Wrap the model with fresh adapters when settings.lora_r > 0 (else return it unchanged), and turn
    gradient checkpointing on when asked. The base weights are frozen by peft."""
    if settings.gradient_checkpointing:
        checkpointing_enable(model)
        if settings.lora_r > 0 and hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()  # checkpointed blocks need an input that requires grad
    if settings.lora_r <= 0:
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                        target_modules=_targets(settings), task_type=task_type)
    return get_peft_model(model, config)


def checkpointing_enable(model: torch.nn.Module) -> None:
    """Activation (gradient) checkpointing, non-reentrant (works with frozen inputs and LoRA)."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def is_lora(model: torch.nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


@contextlib.contextmanager
def adapters_disabled(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The parent model, for reference log-probabilities: the LoRA model with its adapters switched off."""
    if not is_lora(model):
        raise ValueError("adapters_disabled needs a LoRA model")
    with model.disable_adapter():
        yield model


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


# --- adapter folders -----------------------------------------------------------------------------

def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_FILE).is_file() and (Path(path) / BASE_FILE).is_file()


def adapter_base(path: str | Path) -> Path:
    """The folder the adapter at `path` was trained on (plain or itself an adapter)."""
    return Path(json.loads((Path(path) / BASE_FILE).read_text())["base"])


def adapter_chain(path: str | Path) -> list[Path]:
    """[plain base, adapter 1, ..., path]: what loading `path` reads, base first."""
    chain, current = [Path(path)], Path(path)
    while is_adapter_dir(current):
        current = adapter_base(current)
        if current in chain or len(chain) > MAX_CHAIN:
            raise ValueError(f"adapter chain of {path} loops or is longer than {MAX_CHAIN}")
        chain.append(current)
    return list(reversed(chain))


QUANTIZATIONS = ("", "4bit", "8bit")


def quantization_config(quantize: str, device: torch.device) -> Any:
    """bitsandbytes loading for a frozen base (QLoRA, Dettmers et al. 2023); refused off CUDA, where
    bitsandbytes has no kernels, with a message that says so."""
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize_base must be one of {QUANTIZATIONS[1:]} or empty, not {quantize!r}")
    if not quantize:
        return None
    if device.type != "cuda":
        raise ValueError(f"quantize_base={quantize!r} needs a CUDA device (bitsandbytes); this run is on {device.type}")
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def quantize_for_lora(settings: LoraSettings) -> str:
    """The base quantization a run asks for; only LoRA runs may have one (quantized weights cannot train)."""
    if settings.quantize_base and settings.lora_r <= 0:
        raise ValueError("quantize_base needs lora_r > 0: quantized weights are frozen, only adapters train")
    return settings.quantize_base


def load_causal_lm(path: str | Path, dtype: torch.dtype = torch.float32, quantization: Any = None) -> PreTrainedModel:
    """A plain model from a plain folder or an adapter folder (each adapter of the chain merged in memory).
    With a quantization config the base is loaded quantized (adapter chains are merged before, so
    the quantized weights are the parent's)."""
    chain = adapter_chain(path)
    if quantization is not None:
        if len(chain) > 1:
            raise ValueError("quantize_base needs a plain parent folder: merge the adapter version first")
        from peft import prepare_model_for_kbit_training

        model = AutoModelForCausalLM.from_pretrained(chain[0], quantization_config=quantization, device_map={"": 0})
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = AutoModelForCausalLM.from_pretrained(chain[0], dtype=dtype)
    if len(chain) > 1:
        from peft import PeftModel

        for adapter in chain[1:]:
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return model


def save_adapter(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, out_dir: Path, base_dir: str | Path) -> None:
    """Write the adapters (not the base weights) and the base they need into out_dir (a fresh folder)."""
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / BASE_FILE).write_text(json.dumps({"base": str(Path(base_dir).resolve())}, indent=2) + "\n")


def describe(model: torch.nn.Module, settings: LoraSettings) -> dict[str, Any]:
    """What a run's metrics record about its adaptation."""
    trainable, total = trainable_parameters(model)
    return {"lora_r": settings.lora_r, "trainable_parameters": trainable, "total_parameters": total,
            "gradient_checkpointing": settings.gradient_checkpointing}
