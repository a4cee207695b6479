"""Processes that die with their parent, so a training group never outlives the worker that owns it.

The Celery child that runs a group-trained run starts the launcher (torchrun or `accelerate launch`)
through this module:

    python -m training.ml.parent_death PARENT_PID LAUNCHER...

which asks Linux for the parent-death signal (prctl PR_SET_PDEATHSIG: SIGKILL when the parent
dies, kept across exec) and then becomes the launcher. torchrun starts every rank in a session of
its own, so a kill of the launcher's process group does not reach them: each rank asks for the
same signal against the launcher (training.ml.launch calls rank_dies_with_launcher), whose pid this
module leaves in PAIRWISE_GROUP_LEADER_PID. When the OOM killer SIGKILLs the Celery child, the
launcher dies, then every rank, and the GPUs are free. Elsewhere than Linux it only runs the command.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

LEADER_ENV = "PAIRWISE_GROUP_LEADER_PID"
PR_SET_PDEATHSIG = 1


def parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send sig to this process when its parent dies. False where not supported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(*, parent_pid: int) -> None:
    """SIGKILL this process when parent_pid dies; exit now if it already has (we were reparented
    before the signal was armed)."""
    if parent_death_signal() and os.getppid() != parent_pid:
        os._exit(1)


def rank_dies_with_launcher() -> None:
    """Called by each rank at start: die with the launcher that guarded() started (no-op otherwise)."""
    leader = os.environ.get(LEADER_ENV)
    if leader and leader.isdigit():
        die_with_parent(parent_pid=int(leader))


def guarded(command: list[str], *, parent_pid: int) -> list[str]:
    """The command line that runs `command` tied to parent_pid (normally the caller's os.getpid())."""
    return [sys.executable, "-m", "training.ml.parent_death", str(parent_pid), *command]


def main(argv: list[str]) -> None:
    parent_pid, command = int(argv[0]), argv[1:]
    die_with_parent(parent_pid=parent_pid)
    os.environ[LEADER_ENV] = str(os.getpid())  # exec keeps the pid: the ranks' parent
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
