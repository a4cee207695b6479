"""The GPU check: what only a CUDA machine can show, in one run that prints JSON.

  1. the reward model on SmolLM2-135M-Instruct (last-token pooling) in bf16 on CUDA: pairs/s and
     held-out accuracy on hh-rlhf;
  2. full against LoRA DPO on SmolLM2 in bf16 on CUDA (bench/dpo_bench.py --lora --device cuda): GPU peak
     memory and pairs/s of each;
  3. QLoRA DPO (4-bit NF4 base, bitsandbytes) and the CUDA-only tests (tests/training/ml/test_lora.py;
     tests/training/ml/test_vllm_backend.py samples through vLLM where the machine has it installed);
  4. with two GPUs or more, a DPO run on two processes (accelerate launch) against one.
Each part is timed and its failure recorded, not fatal, so one run shows everything.

    bash bench/gpu_check.sh [--data ../shared/datasets/hh-rlhf/helpful-base-test.jsonl.gz]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.report import emit  # noqa: E402

POLICY_DIR = ROOT / "var" / "models" / "smollm2-135m-instruct"


def part(out: dict, name: str, fn) -> None:
    start = time.perf_counter()
    try:
        out[name] = {**fn(), "ok": True}
    except Exception as exc:  # a failed part is a finding, not the end of the check
        out[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-1500:]}
    out[name]["seconds"] = round(time.perf_counter() - start, 1)


def reward_on_cuda(data: str, limit: int) -> dict:
    from bench.dpo_bench import load_pairs
    from training.ml.reward.config import RewardConfig
    from training.ml.reward.data import groups_from_pairs
    from training.ml.reward.loop import train_reward_model

    pairs = load_pairs(data, limit)
    groups = groups_from_pairs(pairs)
    split = int(len(groups) * 0.9)
    config = RewardConfig(base_model=str(POLICY_DIR), pooling="last", precision="bf16", device="cuda", max_length=256,
                          epochs=1, batch_size=16)
    with __import__("tempfile").TemporaryDirectory() as tmp:
        metrics = train_reward_model(groups[:split], config, Path(tmp) / "rm", val_groups=groups[split:])
    return {k: metrics.get(k) for k in ("val_accuracy", "val_log_loss", "comparisons_per_s", "seconds", "precision")}


def run(cmd: list[str], timeout: int = 3000) -> dict:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return {"stdout_tail": done.stdout[-3000:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "hh-rlhf" / "helpful-base-test.jsonl.gz"))
    parser.add_argument("--reward-pairs", type=int, default=2000)
    parser.add_argument("--dpo-pairs", type=int, default=128)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    from training.ml.convert import ensure_smollm2

    ensure_smollm2(POLICY_DIR)
    out: dict = {"cuda": torch.cuda.is_available(), "gpus": torch.cuda.device_count(),
                 "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                 "torch": torch.__version__}
    part(out, "reward_bf16", lambda: reward_on_cuda(args.data, args.reward_pairs))
    dpo = [sys.executable, "bench/dpo_bench.py", "--lora", "--device", "cuda", "--limit", str(args.dpo_pairs),
           "--batch", "16", "--micro", "4", "--data", args.data]
    part(out, "dpo_full_vs_lora", lambda: _last_json(run(dpo)))
    part(out, "cuda_tests", lambda: run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                                          "tests/training/ml/test_lora.py", "tests/training/ml/test_vllm_backend.py"]))
    if out["gpus"] >= 2:
        part(out, "two_processes", lambda: run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                                "tests/training/test_distributed.py"]))
    emit(out, args.json)


def _last_json(result: dict) -> dict:
    """dpo_bench prints one JSON object last; take it from the captured output."""
    tail = result["stdout_tail"]
    return json.loads(tail[tail.index("{"):])


if __name__ == "__main__":
    main()
