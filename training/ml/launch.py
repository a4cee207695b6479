"""One training job run by a group of processes, each of which executes this module:

    torchrun --standalone --nproc_per_node N -m training.ml.launch JOB.json              (CPU, gloo)
    accelerate launch --num_processes N [--config_file F] -m training.ml.launch JOB.json (GPUs, FSDP, DeepSpeed)

`launch_command` builds that line; the Celery task that owns the run starts it and supervises the
group (training.services.groups). The job file names the trainer, its arguments, its data
(a JSONL file) and two outputs: rank 0 appends progress lines to `progress` and writes the final
metrics to `result` (atomically), so the supervisor, which is not in the group, can follow and
report. Every rank trains (training.ml.distributed decides its share); rank 0 alone saves.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from training.ml.parent_death import rank_dies_with_launcher

RESULT_TMP_SUFFIX = ".tmp"


def _read_jsonl(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _dpo(job: dict[str, Any], progress: Callable) -> dict[str, Any]:
    from .dpo import DPOConfig, train_dpo

    return train_dpo(job["parent_dir"], _read_jsonl(job["data"]), job.get("out_dir"), DPOConfig(**job["config"]),
                     progress=progress, eval_pairs=job.get("eval_pairs") or ())


def _sft(job: dict[str, Any], progress: Callable) -> dict[str, Any]:
    from .sft import SFTConfig, train_sft

    return train_sft(job["parent_dir"], _read_jsonl(job["data"]), job["out_dir"], SFTConfig(**job["config"]),
                     progress=progress)


def _reward(job: dict[str, Any], progress: Callable) -> dict[str, Any]:
    from .reward.config import RewardConfig
    from .reward.loop import train_reward_model

    val = job.get("val_groups") or (_read_jsonl(job["val_data"]) if job.get("val_data") else None)
    references = [tuple(pair) for pair in job["reference_texts"]] if job.get("reference_texts") else None
    return train_reward_model(_read_jsonl(job["data"]), RewardConfig(**job["config"]), job["out_dir"], progress=progress,
                              val_groups=val, reference_texts=references)


TRAINERS: dict[str, Callable[[dict[str, Any], Callable], dict[str, Any]]] = {"sft": _sft, "dpo": _dpo, "reward": _reward}


def launch_command(*, job_path: str | Path, processes: int, gpu: bool, accelerate_config: str = "") -> list[str]:
    """The launcher line: accelerate's on GPUs or with an accelerate config file (FSDP, DeepSpeed),
    torchrun on the CPU (accelerate's own CPU launcher wants MPI)."""
    target = ["-m", "training.ml.launch", str(job_path)]
    if gpu or accelerate_config:
        config = ["--config_file", accelerate_config] if accelerate_config else ["--multi_gpu"]
        return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes), *config, *target]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), *target]


def main(job_path: str) -> None:
    rank_dies_with_launcher()  # torchrun gives each rank a session of its own: no group kill reaches it
    job = json.loads(Path(job_path).read_text())
    main_rank = os.environ.get("RANK", "0") == "0"
    progress_file = open(job["progress"], "a", encoding="utf-8") if main_rank else None

    def progress(fraction: float, metrics: dict[str, Any]) -> None:
        if progress_file is not None:
            progress_file.write(json.dumps({"fraction": fraction, "metrics": metrics}, default=str) + "\n")
            progress_file.flush()

    metrics = TRAINERS[job["trainer"]](job, progress)
    if main_rank:
        tmp = Path(job["result"] + RESULT_TMP_SUFFIX)
        tmp.write_text(json.dumps(metrics, default=str))
        os.replace(tmp, job["result"])


if __name__ == "__main__":
    main(sys.argv[1])
