"""Batched candidate generation (ours) against a naive one-prompt-at-a-time `generate` loop.

Same model (SmolLM2-135M-Instruct, fp32), prompts, k, sampling settings and max_new_tokens.
Tokens counted are generated response tokens (up to the stop token). Prints JSON:
{"naive_tokens_per_s", "ours_tokens_per_s", "speedup", ...}

    .venv/bin/python bench/generate_bench.py --prompts 8
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODEL_DIR = ROOT / "var" / "models" / "smollm2-135m-instruct"

from bench.report import emit  # noqa: E402
from training.ml.convert import ensure_smollm2  # noqa: E402
from training.ml.generate import sample  # noqa: E402
from training.ml.text import load_policy, prompt_text, stop_token_ids  # noqa: E402


def load_prompts(path: str, n: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["prompt"] for line, _ in zip(f, range(n))]


@torch.no_grad()
def naive(model, tok, prompts, args) -> int:
    """What one writes first: each prompt, each sample, its own generate call."""
    tokens = 0
    stops = stop_token_ids(tok)
    for prompt in prompts:
        ids = tok(prompt_text(tok, prompt), return_tensors="pt", add_special_tokens=False)
        for _ in range(args.k):
            out = model.generate(**ids, do_sample=True, temperature=args.temperature, top_p=1.0, top_k=0,
                                 max_new_tokens=args.max_new_tokens, eos_token_id=stops, pad_token_id=tok.pad_token_id)
            tokens += count_generated(out[:, ids["input_ids"].shape[1]:], stops)
    return tokens


def ours(model, tok, prompts, args) -> int:
    per_call = max(1, args.batch // args.k)
    tokens = 0
    for i in range(0, len(prompts), per_call):
        _, _, response_mask = sample(model, tok, prompts[i : i + per_call], args.k, args.temperature, 1.0, args.max_new_tokens)
        tokens += int(response_mask.sum())
    return tokens


def count_generated(generated: torch.Tensor, stops: list[int]) -> int:
    is_stop = torch.isin(generated, torch.tensor(stops))
    return int(((is_stop.cumsum(1) - is_stop.long()) == 0).sum())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--k", type=int, default=4, help="samples per prompt")
    parser.add_argument("--batch", type=int, default=32, help="sequences decoded together by ours")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "pandalm" / "testset-v1.jsonl.gz"))
    parser.add_argument("--json", help="also write the JSON here")
    args = parser.parse_args()
    ensure_smollm2(MODEL_DIR)
    model, tok = load_policy(MODEL_DIR)
    model.eval()
    prompts = load_prompts(args.data, args.prompts)

    results = {}
    for name, fn in (("naive", naive), ("ours", ours)):
        torch.manual_seed(0)
        start = time.perf_counter()
        tokens = fn(model, tok, prompts, args)
        seconds = time.perf_counter() - start
        results[name] = {"tokens": tokens, "seconds": seconds}
    payload = {
        "naive_tokens_per_s": round(results["naive"]["tokens"] / results["naive"]["seconds"], 2),
        "ours_tokens_per_s": round(results["ours"]["tokens"] / results["ours"]["seconds"], 2),
    }
    payload["speedup"] = round(payload["ours_tokens_per_s"] / payload["naive_tokens_per_s"], 2)
    payload["settings"] = vars(args) | {"naive_tokens": results["naive"]["tokens"], "ours_tokens": results["ours"]["tokens"],
                                        "threads": torch.get_num_threads()}
    emit(payload, args.json)


if __name__ == "__main__":
    main()
