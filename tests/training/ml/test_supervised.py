"""training.ml.supervised: the set-up, step and finish that SFT and DPO share (the trainers themselves:
test_sft.py, test_dpo.py, test_lora.py; on several processes: tests/training/test_distributed.py)."""
from __future__ import annotations

import random

import torch

from training.ml.sft import SFTConfig
from training.ml.supervised import optimizer_start, optimizer_step, run_start


def test_a_run_starts_seeded_on_its_device_alone():
    device, precision, ranks = run_start(SFTConfig(device="cpu", precision="fp32", seed=3))
    first = torch.rand(1)
    run_start(SFTConfig(device="cpu", precision="fp32", seed=3))
    assert torch.equal(first, torch.rand(1))
    assert device == torch.device("cpu") and precision == "fp32" and ranks.count == 1 and ranks.is_main


def test_the_schedule_counts_every_epoch_and_the_step_clips_then_clears():
    model = torch.nn.Linear(2, 1).eval()
    config = SFTConfig(epochs=3, batch_size=4, lr=0.1, warmup_ratio=0.5, max_grad_norm=0.01)
    model, optimizer, scheduler, total_steps, rng = optimizer_start(model, run_start(config)[2], config, examples=10)
    assert total_steps == 9 and model.training and rng.random() == random.Random(0).random()
    assert scheduler.get_last_lr() == [0.0]  # warming up from zero
    model(torch.ones(1, 2) * 100).sum().backward()
    norm = optimizer_step(model, optimizer, scheduler, config.max_grad_norm)
    assert norm > config.max_grad_norm and all(p.grad is None for p in model.parameters())
    assert 0.0 < scheduler.get_last_lr()[0] < config.lr  # one step into the warmup
