"""Training on several processes, through accelerate: one process per device, each taking its share
of every optimizer step's examples, gradients averaged by DDP (accelerate prepares the model; on the
CPU with the gloo backend, on GPUs with NCCL; FSDP or DeepSpeed when the accelerate config file says so).

A step of B examples is the same step whatever the number of processes N: rank r takes examples
r, r + N, r + 2N, ... of the step, and weighs each micro-batch's loss by its share of the *whole*
step (as one process does) times N, because DDP averages the N ranks' gradients. So one process and
N processes take the same optimizer steps, up to float summation order (tests/training/test_distributed.py).
A rank left without examples in a short last step still joins the step's gradient all-reduce, with a
zero-weighted micro-batch, or the others would wait for it for ever.

Processes are started by `torchrun` (CPU) or `accelerate launch` (GPUs, FSDP, DeepSpeed); see
training.ml.launch. A single process never creates an Accelerator: nothing changes for it.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch


@dataclass
class Ranks:
    """This process's place in the group (index 0 of 1 when training alone)."""

    accelerator: Any = None

    @property
    def count(self) -> int:
        return self.accelerator.num_processes if self.accelerator else 1

    @property
    def index(self) -> int:
        return self.accelerator.process_index if self.accelerator else 0

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def shard(self, ids: Sequence[int]) -> tuple[list[int], float]:
        """This rank's examples of a step, and the weight of its losses (0 for an empty shard, which
        then trains on the step's first example with zero weight, only to join the all-reduce)."""
        mine = list(ids[self.index :: self.count])
        return (mine, float(self.count)) if mine else ([ids[0]], 0.0)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.accelerator.prepare(model) if self.accelerator else model

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.accelerator.unwrap_model(model) if self.accelerator else model

    def no_sync(self, model: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager:
        """Accumulate locally on every micro-batch but the step's last, whose backward all-reduces."""
        if self.accelerator is None or last:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(model)

    def sum(self, values: dict[str, float]) -> dict[str, float]:
        """Per-rank partial sums of a step's logged statistics, summed over the group."""
        if self.accelerator is None:
            return values
        keys = sorted(values)
        total = self.accelerator.reduce(torch.tensor([values[k] for k in keys], dtype=torch.float64), reduction="sum")
        return dict(zip(keys, total.tolist()))

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()


def ranks_get(device: torch.device) -> Ranks:
    """The group this process belongs to: an Accelerator when a launcher started several processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Ranks()
    from accelerate import Accelerator, DistributedDataParallelKwargs

    # Some trainable parameters can get no gradient (a BERT pooler the reward model never reads):
    # DDP then has to look for them each step, or it waits for their gradients for ever.
    unused = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Ranks(Accelerator(cpu=device.type == "cpu", kwargs_handlers=[unused]))


def micro_batches(ids: Sequence[int], size: int) -> Iterator[tuple[list[int], bool]]:
    """(micro-batch, is_last) over a rank's share of a step."""
    chunks = [list(ids[i : i + size]) for i in range(0, len(ids), max(size, 1))]
    for i, chunk in enumerate(chunks):
        yield chunk, i == len(chunks) - 1
