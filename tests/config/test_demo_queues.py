"""The demo's two workers: training runs go to the `training` queue, everything short (exports, the
schedule check, the reaper, the lease sweep) to the default queue, and `make demo` starts one worker
for each, so a round that trains for an hour never leaves an export queued behind it."""
from __future__ import annotations

import re
import shlex

from config.celery import app
from tests.paths import REPO as REPO_ROOT
from training import plan

SHORT_TASKS = ("labeling.tasks.export_run", "training.tasks.reward_retrain_check", "training.tasks.runs_reap_stale")


def queue_of(name: str) -> str:
    route = app.amqp.router.route({}, name, args=(), kwargs={})
    queue = route.get("queue")
    return getattr(queue, "name", queue) or app.conf.task_default_queue


def demo_workers() -> list[set[str]]:
    """The queues of each worker scripts/demo_run.sh starts."""
    script = (REPO_ROOT / "scripts" / "demo_run.sh").read_text()
    workers = []
    for line in script.splitlines():
        words = shlex.split(line, comments=True)
        if "celery" in " ".join(words[:1]) and "worker" in words:
            workers.append(set(words[words.index("-Q") + 1].split(",")))
    return workers


def test_training_and_short_jobs_go_to_separate_queues():
    for name in set(plan.TASK_OF_KIND.values()):
        assert queue_of(name) == "training", name
    for name in SHORT_TASKS:
        assert queue_of(name) == "celery", name


def test_the_demo_starts_one_worker_per_queue():
    workers = demo_workers()
    assert {"celery"} in workers and {"training"} in workers, workers
    assert not any(len(queues) > 1 for queues in workers), "a worker that takes both queues lets training starve exports"
    assert re.search(r"scripts/demo_run\.sh", (REPO_ROOT / "Makefile").read_text())
