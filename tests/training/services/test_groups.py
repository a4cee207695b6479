"""training.services.groups: a run on a group of processes (torchrun, gloo, on the CPU) trains, reports
its progress through the run, fails with the group's log when a rank dies, and is ended, every rank of
it, when the run is cancelled."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch

from tests.training.conftest import DPO_FAST, SFT_FAST, policy_run, weights
from training.models import TrainingRun
from training.services.execution import RunAborted
from training.services.groups import group_train


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.django_db
def test_a_dpo_run_on_two_processes_makes_a_version(setup):
    project, base = setup
    run, version = policy_run(project, "dpo", {**DPO_FAST, "epochs": 2}, processes=2)
    assert version is not None, run.error
    assert version.metrics["processes"] == 2 and version.parent_id == base.pk
    assert run.progress == 1.0 and run.params["processes"] == 2
    assert "training on 2 processes" in run.log_tail and "step=" in run.log_tail  # rank 0's progress, forwarded
    assert (Path(version.artifact_path) / "model.safetensors").exists()
    assert not list(Path(version.artifact_path).parent.glob(".group-*"))  # the scratch folder is gone


@pytest.mark.django_db
def test_an_sft_run_on_two_processes_makes_a_version(setup):
    project, base = setup
    run, version = policy_run(project, "sft", {**SFT_FAST, "micro_batch_size": 1}, processes=2)
    assert version is not None, run.error
    assert version.metrics["processes"] == 2 and version.parent_id == base.pk and version.config["trainer"] == "sft"
    assert run.progress == 1.0 and run.params["processes"] == 2 and version.config["processes"] == 2
    assert "training on 2 processes" in run.log_tail and "step=" in run.log_tail  # rank 0's progress, forwarded
    before, after = weights(base.artifact_path), weights(version.artifact_path)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # rank 0 saved the trained weights
    assert not list(Path(version.artifact_path).parent.glob(".group-*"))  # the scratch folder is gone


@pytest.mark.django_db
def test_a_rank_that_dies_fails_the_run_with_the_groups_log(setup):
    project, _ = setup
    run, version = policy_run(project, "dpo", {**DPO_FAST, "device": "no-such-device"}, processes=2)
    assert version is None and run.status == TrainingRun.Status.FAILED
    assert "process group failed" in run.error and "no-such-device" in run.error
    assert not Path(run.params["output_dir"]).exists()


class CancelAfterFirstStep:
    """A RunReporter stand-in: the run is cancelled once the group has reported a step."""

    def __init__(self):
        self.points = []

    def __call__(self, fraction, metrics):
        self.points.append(metrics)
        raise RunAborted("cancelled")

    def flush(self):
        pass

    def log(self, line):
        pass


def test_cancelling_ends_every_process_of_the_group(tmp_path, tiny_policy, monkeypatch):
    import subprocess

    started = []
    real = subprocess.Popen
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: started.append(real(*a, **k)) or started[-1])
    pairs = [{"prompt": f"pick {i}", "chosen": "yes", "rejected": "no"} for i in range(64)]
    job = {"parent_dir": str(tiny_policy), "out_dir": str(tmp_path / "out"),
           "config": {**DPO_FAST, "epochs": 50, "batch_size": 2, "micro_batch_size": 1}}
    reporter = CancelAfterFirstStep()
    begin = time.monotonic()
    with pytest.raises(RunAborted):
        group_train(trainer="dpo", job=job, rows=pairs, processes=2, scratch=tmp_path / "scratch", reporter=reporter)
    assert reporter.points and reporter.points[0]["step"] == 1
    assert started and not _alive(started[0].pid)  # the launcher and both ranks: one process group
    assert time.monotonic() - begin < 120 and not (tmp_path / "scratch").exists() and not (tmp_path / "out").exists()


RANK_SCRIPT = """
import os, sys, time
from training.ml.parent_death import rank_dies_with_launcher
rank_dies_with_launcher()  # as training.ml.launch does
open(os.path.join(sys.argv[1], "rank-" + os.environ["RANK"]), "w").write(str(os.getpid()))
time.sleep(600)
"""

OWNER_SCRIPT = """
import os, sys, time
import django
django.setup()
from training.services.groups import group_start
with open(os.path.join(sys.argv[1], "group.log"), "wb") as log:
    process = group_start(command=sys.argv[2:], env=dict(os.environ), log=log)
open(os.path.join(sys.argv[1], "launcher"), "w").write(str(process.pid))
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # dead, waiting for init to reap it
    except psutil.NoSuchProcess:
        return True


def test_the_group_dies_with_the_worker_process_that_owns_it(tmp_path):
    """The OOM killer SIGKILLs the Celery child that supervises a group: torchrun and every rank (each
    in a session of its own) go too, so none keeps the GPUs. The owner starts a real torchrun group
    through group_start; its ranks sleep."""
    import subprocess
    import sys

    from django.conf import settings

    (tmp_path / "rank.py").write_text(RANK_SCRIPT)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "PYTHONPATH": str(settings.BASE_DIR),
           "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                str(tmp_path / "rank.py"), str(tmp_path)]
    owner = subprocess.Popen([sys.executable, "-c", OWNER_SCRIPT, str(tmp_path), *launcher], cwd=settings.BASE_DIR,
                             env=env)
    pids = {}
    try:
        deadline = time.monotonic() + 120
        while len(pids) < 3 and time.monotonic() < deadline:
            assert owner.poll() is None, "the owner exited"
            pids = {p.name: int(p.read_text()) for p in tmp_path.iterdir() if p.name in ("launcher", "rank-0", "rank-1")
                    and p.read_text()}
            time.sleep(0.2)
        log = (tmp_path / "group.log").read_text(errors="replace") if (tmp_path / "group.log").exists() else ""
        assert len(pids) == 3, f"the group did not start: {pids}\n{log[-3000:]}"
        assert not any(_gone(pid) for pid in pids.values())

        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(_gone(pid) for pid in pids.values()):
            time.sleep(0.1)
        assert {name: _gone(pid) for name, pid in pids.items()} == {"launcher": True, "rank-0": True, "rank-1": True}
    finally:
        for pid in [owner.pid, *pids.values()]:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
