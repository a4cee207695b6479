"""Sample k candidate responses per prompt for labelers to rank (InstructGPT step 2 input).

Speed comes from batching: prompts are LEFT-padded so every row's last prompt token sits at the
same position, and `generate` then decodes all rows together with the KV cache. Each prompt is
repeated k times in the batch (num_return_sequences), so one prompt encoding serves k samples.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .common import ProgressFn, no_progress, pick_device, set_seed
from .endpoint import unique_responses
from .text import DEFAULT_SYSTEM_PROMPT, Prompt, load_policy, prompt_text, stop_token_ids
from .vllm_backend import backend_choose, vllm_candidates


@torch.no_grad()
def sample(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], k: int,
    temperature: float, top_p: float, max_new_tokens: int, system_prompt: str = DEFAULT_SYSTEM_PROMPT,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batched generate call. Row i*k + j is sample j of prompt i.

    Shape: returns (sequences [B*k, P+N], attention_mask [B*k, P+N], response_mask [B*k, P+N]);
    P is the left-padded prompt width and N <= max_new_tokens. response_mask covers generated
    tokens up to and including the first stop token.
    """
    device = next(model.parameters()).device
    texts = [prompt_text(tokenizer, p, system_prompt) for p in prompts]
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    stops = stop_token_ids(tokenizer)
    sampling = temperature > 0
    out = model.generate(
        **enc, do_sample=sampling, temperature=temperature if sampling else None,
        top_p=top_p if sampling else None, top_k=0 if sampling else None,
        max_new_tokens=max_new_tokens, num_return_sequences=k if sampling else 1,
        eos_token_id=stops, pad_token_id=tokenizer.pad_token_id,
    )
    if not sampling:  # greedy gives k identical rows: decode once, copy
        out = out.repeat_interleave(k, dim=0)
    width = enc["input_ids"].shape[1]
    generated = out[:, width:]
    # Everything after the first stop token is padding that generate wrote for finished rows.
    is_stop = torch.isin(generated, torch.tensor(stops, device=device))
    after_stop = (is_stop.cumsum(dim=1) - is_stop.long()) > 0
    prompt_mask = enc["attention_mask"].repeat_interleave(k, dim=0)
    attention_mask = torch.cat([prompt_mask, (~after_stop).long()], dim=1)
    response_mask = torch.cat([torch.zeros_like(prompt_mask), (~after_stop).long()], dim=1)
    return out, attention_mask, response_mask


def decode_responses(tokenizer: PreTrainedTokenizerBase, sequences: torch.Tensor, response_mask: torch.Tensor) -> list[str]:
    return [
        tokenizer.decode(seq[mask.bool()], skip_special_tokens=True).strip()
        for seq, mask in zip(sequences, response_mask)
    ]


def generate_candidates(
    model_dir: str | Path, prompts: Sequence[Prompt], k: int = 4, temperature: float = 1.0, top_p: float = 1.0,
    max_new_tokens: int = 128, system_prompt: str = DEFAULT_SYSTEM_PROMPT, batch_size: int = 16,
    seed: int = 0, progress: ProgressFn = no_progress, device: str = "auto", backend: str = "auto",
) -> list[list[str]]:
    """Up to k distinct responses per prompt (fewer when samples repeat), in prompt order.

    batch_size counts sequences decoded together (prompts per call = batch_size // k, at least 1).
    backend: "auto" uses vLLM where it is installed and can serve the folder (training.ml.vllm_backend).
    """
    if backend_choose(model_dir=model_dir, device=pick_device(device), requested=backend)[0] == "vllm":
        results = vllm_candidates(model_dir, prompts, k, temperature, top_p, max_new_tokens, system_prompt, seed)
        progress(1.0, {"prompts_done": len(results)})
        return results
    set_seed(seed)
    model, tokenizer = load_policy(model_dir, pick_device(device))
    model.eval()
    per_call = max(1, batch_size // k)
    results: list[list[str]] = []
    for start in range(0, len(prompts), per_call):
        chunk = prompts[start : start + per_call]
        seqs, _, response_mask = sample(model, tokenizer, chunk, k, temperature, top_p, max_new_tokens, system_prompt)
        texts = decode_responses(tokenizer, seqs, response_mask)
        results.extend(unique_responses(texts[i * k : (i + 1) * k], k) for i in range(len(chunk)))
        progress(len(results) / len(prompts), {"prompts_done": len(results)})
    return results
