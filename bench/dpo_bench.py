"""Our DPO loop against TRL 1.16's DPOTrainer: same model, pairs, batch, length and precision.
With --lora: our full DPO against our LoRA DPO (same pairs and settings), the memory LoRA saves.

Each side runs in its own subprocess so its peak memory is its own: the process's peak RSS
(ru_maxrss), or on CUDA the GPU's peak allocation. Prints JSON:
{"ours_pairs_per_s", "trl_pairs_per_s", "speedup", "ours_peak_rss_mb", "trl_peak_rss_mb", ...}, or with --lora
{"full_pairs_per_s", "lora_pairs_per_s", "full_peak_rss_mb", "lora_peak_rss_mb", "lora_memory_ratio", "lora_speed_ratio"}.

    .venv/bin/python bench/dpo_bench.py --data ../shared/datasets/hh-rlhf/helpful-base-test.jsonl.gz [--lora]
"""
from __future__ import annotations

import argparse
import gzip
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

MODEL_DIR = ROOT / "var" / "models" / "smollm2-135m-instruct"


def load_pairs(path: str, limit: int) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows[:limit]]


def run_ours(args: argparse.Namespace, pairs: list[dict], lora_r: int = 0) -> float:
    from training.ml.dpo import DPOConfig, train_dpo

    config = DPOConfig(
        beta=0.1, epochs=1, lr=5e-6 if not lora_r else 5e-5, batch_size=args.batch, micro_batch_size=args.micro,
        max_length=args.max_length, precision=args.precision, warmup_ratio=0.0, lora_r=lora_r, lora_alpha=2 * lora_r,
        device=args.device, gradient_checkpointing=args.checkpointing,
        # No adapter dropout: peft keeps a dropped-out copy of every adapted layer's input for the backward.
        lora_dropout=0.0,
    )
    start = time.perf_counter()
    train_dpo(MODEL_DIR, pairs, None, config)
    return time.perf_counter() - start


def run_trl(args: argparse.Namespace, pairs: list[dict]) -> float:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from training.ml.text import to_messages

    # Conversational format, so TRL applies the same chat template and system prompt as ours.
    rows = [
        {"prompt": to_messages(p["prompt"]), "chosen": [{"role": "assistant", "content": p["chosen"].strip()}],
         "rejected": [{"role": "assistant", "content": p["rejected"].strip()}]}
        for p in pairs
    ]
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR)
    with tempfile.TemporaryDirectory() as out:
        config = DPOConfig(
            output_dir=out, use_cpu=True, bf16=args.precision == "bf16", gradient_checkpointing=False,
            per_device_train_batch_size=args.micro, gradient_accumulation_steps=args.batch // args.micro,
            num_train_epochs=1, learning_rate=5e-6, beta=0.1, max_length=args.max_length,
            truncation_mode="keep_end", report_to=[], save_strategy="no", logging_steps=1000, lr_scheduler_type="cosine",
        )
        trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
        trainer.train()
    return time.perf_counter() - start


def child(args: argparse.Namespace) -> None:
    import torch

    torch.manual_seed(0)
    pairs = load_pairs(args.data, args.limit)
    if args.side == "trl":
        seconds = run_trl(args, pairs)
    else:
        seconds = run_ours(args, pairs, lora_r=args.lora_r if args.side == "lora" else 0)
    if torch.cuda.is_available() and args.device != "cpu":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    emit({"pairs_per_s": len(pairs) / seconds, "seconds": seconds, "peak_rss_mb": peak_mb}, indent=None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "hh-rlhf" / "helpful-base-test.jsonl.gz"))
    parser.add_argument("--limit", type=int, default=32, help="pairs trained on (one epoch)")
    parser.add_argument("--batch", type=int, default=8, help="pairs per optimizer step")
    parser.add_argument("--micro", type=int, default=2, help="pairs per forward pass")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--lora", action="store_true", help="compare our full DPO with our LoRA DPO instead of TRL")
    parser.add_argument("--lora-r", type=int, default=16, help="LoRA rank for --lora (alpha = 2r, all linear layers)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing on both sides")
    parser.add_argument("--json", help="also write the JSON here")
    parser.add_argument("--side", choices=["ours", "trl", "full", "lora"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return child(args)

    from training.ml.convert import ensure_smollm2

    ensure_smollm2(MODEL_DIR)
    passthrough = [a for a in sys.argv[1:] if not a.startswith("--json")]
    if "--json" in sys.argv:
        i = sys.argv.index("--json")
        passthrough = sys.argv[1:i] + sys.argv[i + 2 :]
    results = {}
    for side in ("full", "lora") if args.lora else ("ours", "trl"):
        out = subprocess.run([sys.executable, __file__, *passthrough, "--side", side], capture_output=True, text=True, check=True)
        results[side] = json.loads(out.stdout.strip().splitlines()[-1])
    settings = {"data": args.data, "pairs": args.limit, "batch": args.batch, "micro": args.micro,
                "max_length": args.max_length, "precision": args.precision}
    if args.lora:
        full, lora = results["full"], results["lora"]
        payload = {
            "full_pairs_per_s": round(full["pairs_per_s"], 3), "lora_pairs_per_s": round(lora["pairs_per_s"], 3),
            "full_peak_rss_mb": round(full["peak_rss_mb"]), "lora_peak_rss_mb": round(lora["peak_rss_mb"]),
            "lora_memory_ratio": round(lora["peak_rss_mb"] / full["peak_rss_mb"], 3),
            "lora_speed_ratio": round(lora["pairs_per_s"] / full["pairs_per_s"], 3),
            "settings": {**settings, "lora_r": args.lora_r, "lora_alpha": 2 * args.lora_r, "target_modules": "all-linear",
                         "lora_dropout": 0.0, "checkpointing": args.checkpointing,
                         "memory": "cuda max_memory_allocated" if "cuda" in (args.device or "") else "peak RSS"},
        }
        emit(payload, args.json)
        return
    payload = {
        "ours_pairs_per_s": round(results["ours"]["pairs_per_s"], 3),
        "trl_pairs_per_s": round(results["trl"]["pairs_per_s"], 3),
        "speedup": round(results["ours"]["pairs_per_s"] / results["trl"]["pairs_per_s"], 2),
        "ours_peak_rss_mb": round(results["ours"]["peak_rss_mb"]),
        "trl_peak_rss_mb": round(results["trl"]["peak_rss_mb"]),
        "settings": {**settings, "trl_gradient_checkpointing": False},
    }
    emit(payload, args.json)


if __name__ == "__main__":
    main()
