"""Small pieces every trainer shares: device and precision choice, seeding, config files and
atomic artifact folders."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from .lora import LoraSettings

ProgressFn = Callable[[float, dict[str, Any]], None]
"""progress(fraction_done_0_to_1, metrics) — called by trainers; the Celery layer stores it."""


@dataclass
class TrainerConfig(LoraSettings):
    """What every trainer's config shares (LoRA and memory options included). Each trainer's config
    extends it, and is saved whole inside its checkpoint."""

    precision: str = field(default="auto", metadata={"help": "'auto' (bf16 autocast where the hardware does it natively, else fp32), 'bf16' or 'fp32'."})
    device: str = field(default="auto", metadata={"help": "'auto' (cuda if present), 'cpu', 'cuda', 'cuda:1', ..."})
    seed: int = field(default=0, metadata={"help": "Seed for initialisation, shuffling and sampling."})


def no_progress(fraction: float, metrics: dict[str, Any]) -> None:
    return None


def pick_device(requested: str = "auto") -> torch.device:
    if requested != "auto":
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast pays off on CUDA and on CPUs with AMX/AVX512-BF16 (2-3x measured here)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return torch.backends.cpu.get_cpu_capability() in {"AVX512", "AMX"} or _cpu_has_bf16()
        except Exception:
            return False
    return False


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' becomes 'bf16' where the hardware does it natively, else 'fp32'."""
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))


@contextlib.contextmanager
def atomic_output_dir(final_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside final_dir; rename it into place only if the block succeeds.

    The rename is atomic on one filesystem, so a reader sees either no folder or a complete one,
    and a crashed run leaves only a `.tmp-*` folder that nothing points to. The files and folders
    are fsynced before the rename and the parent after it, so after a power loss the version the
    database registered is there whole (not a folder of empty or truncated files).
    """
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    if final_dir.exists():
        raise FileExistsError(f"{final_dir} already exists")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final_dir.name}-", dir=final_dir.parent))
    try:
        yield tmp
        fsync_tree(tmp)
        os.rename(tmp, final_dir)
        fsync_path(final_dir.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def fsync_path(path: str | os.PathLike) -> None:
    """Flush one file or folder (its entries) to disk."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike) -> None:
    """Flush every file under root, then each folder, deepest first, root last."""
    folders = []
    for folder, _, files in os.walk(root):
        folders.append(folder)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                fsync_path(path)
    for folder in reversed(folders):
        fsync_path(folder)
