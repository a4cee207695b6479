"""Does a ~1.1B policy train with DPO on this machine? LoRA against full weights, in one run.

A randomly initialised Llama of TinyLlama-1.1B's shape (22 layers, hidden 2048, MLP 5632, 32 heads,
4 KV heads; SmolLM2's tokenizer, so 49,152 tokens of vocabulary) is built from a config and saved
once (nothing is downloaded). Then each side, in its own subprocess so its peak RSS is its own,
runs --steps DPO optimizer steps of --batch pairs (micro-batches of one pair) on real hh-rlhf pairs,
with activation checkpointing and bf16 autocast where the CPU has it:
  - lora: rank 16 on every linear layer, the reference being the policy with its adapters off;
  - full: every weight trains (AdamW keeps two more fp32 copies), the reference computed up front.
A side killed for memory is reported as such. Prints JSON:
{"parameters", "lora": {"peak_rss_mb", "seconds", "ok"}, "full": {...}, "lora_memory_ratio"}.

    .venv/bin/python bench/lora_scale.py --data ../shared/datasets/hh-rlhf/helpful-base-test.jsonl.gz [--steps 3]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.report import emit  # noqa: E402

TOKENIZER_DIR = ROOT / "var" / "models" / "smollm2-135m-instruct"
SHAPE = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
             num_key_value_heads=4, max_position_embeddings=2048, tie_word_embeddings=False)


def build(folder: Path) -> int:
    """Save a random Llama of the 1.1B shape (bf16 on disk; trainers load it as fp32) and SmolLM2's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         **SHAPE)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def child(args: argparse.Namespace) -> None:
    from bench.dpo_bench import load_pairs
    from training.ml.dpo import DPOConfig, train_dpo

    lora = args.side == "lora"
    pairs = load_pairs(args.data, args.steps * args.batch)
    config = DPOConfig(epochs=1, batch_size=args.batch, micro_batch_size=1, max_length=args.max_length, warmup_ratio=0.0,
                       lr=5e-5 if lora else 5e-6, lora_r=16 if lora else 0, lora_alpha=32, gradient_checkpointing=True)
    start = time.perf_counter()
    metrics = train_dpo(args.model, pairs, None, config)
    emit({"seconds": round(time.perf_counter() - start, 1), "steps": metrics["steps"],
          "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
          "precision": metrics["precision"], "adaptation": metrics["adaptation"], "ok": True}, indent=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "hh-rlhf" / "helpful-base-test.jsonl.gz"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2, help="pairs per optimizer step")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--sides", default="lora,full", help="which sides to run, in order")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--side", choices=["lora", "full", "build"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "build":
        print(build(Path(args.model)))
        return
    if args.side:
        return child(args)

    from training.ml.convert import ensure_smollm2

    ensure_smollm2(TOKENIZER_DIR)
    out: dict = {"shape": SHAPE, "settings": {"steps": args.steps, "batch": args.batch, "max_length": args.max_length}}
    with tempfile.TemporaryDirectory(dir=ROOT / "var") as tmp:
        model = Path(tmp) / "llama-1.1b-random"
        # Built in a child too: this process must not hold the model's memory while a side measures its peak.
        built = subprocess.run([sys.executable, __file__, "--side", "build", "--model", str(model)],
                               capture_output=True, text=True, check=True)
        out["parameters"] = int(built.stdout.strip().splitlines()[-1])
        for side in args.sides.split(","):
            cmd = [sys.executable, __file__, "--side", side, "--model", str(model), "--data", args.data,
                   "--steps", str(args.steps), "--batch", str(args.batch), "--max-length", str(args.max_length)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode == 0:
                out[side] = json.loads(done.stdout.strip().splitlines()[-1])
            else:  # -9: killed, most likely by the kernel's OOM killer
                out[side] = {"ok": False, "returncode": done.returncode, "stderr": done.stderr[-600:]}
    if out.get("lora", {}).get("ok") and out.get("full", {}).get("ok"):
        out["lora_memory_ratio"] = round(out["lora"]["peak_rss_mb"] / out["full"]["peak_rss_mb"], 3)
    emit(out, args.json)


if __name__ == "__main__":
    main()
