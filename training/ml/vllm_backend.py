"""Local candidate generation through vLLM, on a GPU worker that has it installed (an optional
dependency: `pip install vllm` there; it brings its own CUDA build of torch, so it is never in
requirements.txt). vLLM's paged attention and continuous batching make sampling K candidates per
prompt many times faster than `model.generate`; without it, or on the CPU, transformers does the job
(training.ml.generate) and the candidates are the same kind of samples.

Adapter versions (LoRA folders) stay on transformers, which merges them in memory: vLLM would need
the adapter's whole chain of bases. Merge such a version (the *Merge* action) to serve it with vLLM.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import torch

from .endpoint import unique_responses
from .lora import is_adapter_dir
from .text import DEFAULT_SYSTEM_PROMPT, Prompt, prompt_text, stop_token_ids

BACKENDS = ("auto", "vllm", "transformers")


class BackendUnavailable(RuntimeError):
    """`vllm` was asked for by name and cannot serve this model here."""


def backend_choose(*, model_dir: str | Path, device: torch.device, requested: str = "auto") -> tuple[str, str]:
    """("vllm" | "transformers", why). "auto" takes vLLM where it can serve the folder; "vllm" insists
    (BackendUnavailable with the reason otherwise); "transformers" never uses vLLM."""
    if requested not in BACKENDS:
        raise ValueError(f"generation backend: one of {', '.join(BACKENDS)}, not {requested!r}")
    if requested == "transformers":
        return "transformers", "asked for"
    blocker = (
        "vllm is not installed" if importlib.util.find_spec("vllm") is None
        else f"vLLM needs a CUDA device, this run has {device.type}" if device.type != "cuda"
        else "an adapter version (merge it to serve it with vLLM)" if is_adapter_dir(model_dir)
        else ""
    )
    if not blocker:
        return "vllm", "installed, CUDA, plain model folder"
    if requested == "vllm":
        raise BackendUnavailable(f"vLLM cannot generate here: {blocker}")
    return "transformers", blocker


def vllm_candidates(
    model_dir: str | Path, prompts: Sequence[Prompt], k: int, temperature: float, top_p: float, max_new_tokens: int,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT, seed: int = 0,
) -> list[list[str]]:
    """Up to k distinct responses per prompt, in prompt order: the same prompt text (chat template and
    system prompt) and stop tokens as the transformers path, so both give the same kind of samples."""
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    llm = LLM(model=str(model_dir), seed=seed, dtype="auto")
    sampling = SamplingParams(
        n=k if temperature > 0 else 1, temperature=temperature, top_p=top_p if temperature > 0 else 1.0,
        max_tokens=max_new_tokens, seed=seed, stop_token_ids=stop_token_ids(tokenizer),
    )
    outputs = llm.generate([prompt_text(tokenizer, p, system_prompt) for p in prompts], sampling)
    return [unique_responses([o.text.strip() for o in out.outputs], k) for out in outputs]
