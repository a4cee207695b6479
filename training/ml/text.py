"""Prompt formatting, tokenisation and per-token log-probabilities shared by the policy trainers.

A prompt is a plain string, an Anthropic transcript ("\n\nHuman: ...\n\nAssistant:"), or a list
of chat messages. Every prompt goes through the model's chat template with an explicit system
message, so SFT, DPO, PPO, generation and evaluation all see the same prefix.
A response is tokenised separately and followed by the EOS token: generation stops on EOS, so the
policy must learn to emit it, and prompt/response token boundaries match what `generate` sees.
"""
from __future__ import annotations

import inspect

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from labeling.transcripts import messages_transcript

from .common import TrainerConfig
from .lora import load_causal_lm, quantization_config

Messages = list[dict[str, str]]
Prompt = Union[str, Messages]

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
IGNORE_INDEX = -100



@dataclass
class PolicyConfig(TrainerConfig):
    """What the policy trainers' configs (SFT, DPO, PPO) share on top of TrainerConfig."""

    system_prompt: str = field(default=DEFAULT_SYSTEM_PROMPT, metadata={"help": "System message put before every prompt."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (per model in PPO)."})


@dataclass
class SupervisedConfig(PolicyConfig):
    """What SFT and DPO share: both are supervised passes over a dataset with warmup and cosine decay."""

    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})


_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def to_messages(prompt: Prompt, system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> Messages:
    """Chat messages with exactly one leading system message (ours unless the prompt has one)."""
    if isinstance(prompt, str):
        messages = hh_to_messages(prompt) if prompt.startswith("\n\nHuman:") else [{"role": "user", "content": prompt}]
    else:
        messages = [dict(m) for m in prompt]
    if not messages or messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def hh_to_messages(transcript: str) -> Messages:
    """Split an hh-rlhf transcript into turns; the trailing empty "Assistant:" marker is dropped
    because the chat template's generation prompt plays its part."""
    parts = _HH_TURN.split(transcript)
    messages = []
    for role, text in zip(parts[1::2], parts[2::2]):
        text = text.strip()
        if text:
            messages.append({"role": "user" if role == "Human" else "assistant", "content": text})
    return messages


def prompt_as_transcript(prompt: Prompt) -> str:
    """A prompt as plain text for reward models, which were trained on raw dataset prompts: strings
    pass through, message lists become the product's one HH transcript (labeling.transcripts, the
    same the exports and the reward model's training data use)."""
    return prompt if isinstance(prompt, str) else messages_transcript(prompt)


def prompt_text(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> str:
    return tokenizer.apply_chat_template(to_messages(prompt, system_prompt), tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> list[int]:
    # The template already writes any BOS-like marker; letting the tokenizer add one would double it.
    return tokenizer(prompt_text(tokenizer, prompt, system_prompt), add_special_tokens=False)["input_ids"]


def encode_response(tokenizer: PreTrainedTokenizerBase, response: str) -> list[int]:
    return tokenizer(response.strip(), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """EOS plus ChatML's end-of-turn marker where the vocabulary has one as a single token: where every
    sampler (transformers' generate, vLLM) stops a response."""
    ids = {tokenizer.eos_token_id}
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    return sorted(i for i in ids if i is not None)


def encode_example(
    tokenizer: PreTrainedTokenizerBase, prompt: Prompt, response: str, max_length: int,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
) -> tuple[list[int], int]:
    """(prompt + response ids, number of prompt tokens), cut to max_length.

    Long prompts lose their oldest tokens first (the question is at the end of a transcript);
    the response keeps at least half the budget, and is cut at its end if still too long.
    """
    p = encode_prompt(tokenizer, prompt, system_prompt)
    r = encode_response(tokenizer, response)
    if len(p) + len(r) > max_length:
        keep_prompt = max(max_length - len(r), max_length // 2)
        p = p[-keep_prompt:]
        r = r[: max_length - len(p)]
    return p + r, len(p)


def collate(examples: Sequence[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad encoded examples. Shape: input_ids, attention_mask, response_mask all [B, T];
    response_mask is 1 on response tokens (those that carry a loss), 0 on prompt and padding."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    response_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(examples):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention_mask[i, : len(ids)] = 1
        response_mask[i, n_prompt : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask}


def lm_labels(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Labels for HF's causal-LM loss: the prompt and padding become -100 so only the response trains."""
    return batch["input_ids"].masked_fill(batch["response_mask"] == 0, IGNORE_INDEX)


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(token_t | tokens_<t) for every position after the first.

    Shape: logits [B, T, V], input_ids [B, T] -> [B, T-1] (entry t scores input_ids[:, t+1]).
    Computed in fp32: bf16 log-softmax over a 49k vocabulary loses the small differences DPO and
    the KL penalty depend on.
    """
    logits = logits[:, :-1].float()
    targets = input_ids[:, 1:]
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token. generate() does this for left-padded
    prompts; a plain forward must do the same or its logps disagree with the sampler's."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def forward_logits(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask)).logits


def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    """Does the causal LM under any DDP/peft wrappers take `logits_to_keep` (transformers >= 4.45 models)?"""
    inner = getattr(model, "module", model)
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def sequence_token_logprobs(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token logps [B, T-1], mask [B, T-1]) of the response tokens under model; 0 where mask is 0.

    Logits are made only for the columns where some row has a response token (`logits_to_keep`):
    the vocabulary projection and its log-softmax are a fifth of a 135M model's compute and most of
    its activation memory, and prompt columns need none (1.2-1.4x per DPO step measured here).
    """
    ids, att = batch["input_ids"], batch["attention_mask"]
    mask = batch["response_mask"][:, 1:].float()
    cols = mask.any(dim=0).nonzero().squeeze(-1)  # column t scores token t + 1
    if cols.numel() == 0 or not accepts_logits_to_keep(model):
        return token_logprobs(forward_logits(model, ids, att), ids) * mask, mask
    logits = model(input_ids=ids, attention_mask=att, position_ids=position_ids(att), logits_to_keep=cols).logits.float()
    picked = logits.gather(-1, ids[:, cols + 1].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    logps = picked.new_zeros(mask.shape)
    logps[:, cols] = picked
    return logps * mask, mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def load_policy(path: str | Path, device: torch.device | None = None, quantize: str = "") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A policy and its tokenizer from a plain folder or a LoRA adapter folder (merged onto its base in
    memory, training.ml.lora), so generation, evaluation and every trainer serve adapter versions as they
    are. quantize ('4bit', '8bit'): the frozen base of a LoRA run, loaded through bitsandbytes on CUDA."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    quantization = quantization_config(quantize, device or torch.device("cpu")) if quantize else None
    model = load_causal_lm(path, dtype=torch.float32, quantization=quantization)
    if device is not None and quantization is None:
        model.to(device)
    return model, tokenizer


def batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}
