"""A REAL Celery worker for the training tests, plus small data helpers.

`celery_worker_factory(**env)` starts `celery -A config worker -Q celery,training -P prefork -c 1`
as a subprocess on the pytest test database (so tests using it need
`@pytest.mark.django_db(transaction=True)`: the worker only sees committed rows) and on the broker
in CELERY_BROKER_URL (Redis in CI; with no variable both sides use the same filesystem broker
folder under var/). Prefork with one child matches production, and lets a test SIGKILL the child
that runs a task while the parent lives on, exactly what the OOM killer does.

Reuse from another test package (e.g. tests/e2e/conftest.py):
    from tests.training.conftest import celery_worker, celery_worker_factory, models_dir  # noqa: F401
"""
from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from django.conf import settings

torch.set_num_threads(1)

REPO = Path(settings.BASE_DIR)


def _database_url() -> str:
    db = settings.DATABASES["default"]
    if not db["ENGINE"].endswith("postgresql"):
        # SQLite: the test database is a file; a worker can share it (WAL) when it is not in memory.
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


class WorkerProcess:
    def __init__(self, proc: subprocess.Popen, log_path: Path):
        self.proc, self.log_path = proc, log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            if " ready." in self.log():
                return
            time.sleep(0.2)
        raise TimeoutError(f"celery worker not ready after {timeout}s:\n{self.log()[-4000:]}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # The pool children are in the worker's process group; none may outlive the test.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _purge(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "celery", "-A", "config", "purge", "-f", "-Q", "celery,training"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False,
    )


@pytest.fixture
def models_dir(tmp_path, settings) -> Path:
    """Artifacts of this test go here, in the test process and in any worker it starts."""
    path = tmp_path / "models"
    path.mkdir()
    settings.PAIRWISE_MODELS_DIR = path
    return path


@pytest.fixture
def celery_worker_factory(transactional_db, models_dir, tmp_path) -> Callable[..., WorkerProcess]:
    started: list[WorkerProcess] = []

    def start(*, pool: str = "prefork", **extra_env: Any) -> WorkerProcess:
        env = dict(os.environ)
        env.update({
            "DATABASE_URL": _database_url(),
            "CONN_MAX_AGE": "0",
            "PAIRWISE_MODELS_DIR": str(models_dir),
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
        })
        env.update({k: str(v) for k, v in extra_env.items()})
        env.pop("CELERY_TASK_ALWAYS_EAGER", None)
        _purge(env)
        log_path = tmp_path / f"worker-{len(started)}.log"
        log = open(log_path, "w")
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "celery,training", "-P", pool,
                "-c", "1", "-l", "info", "-n", f"pytest-{uuid.uuid4().hex[:8]}@%h",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        worker = WorkerProcess(proc, log_path)
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def celery_worker(celery_worker_factory) -> WorkerProcess:
    return celery_worker_factory()


def wait_for(predicate: Callable[[], Any], timeout: float = 120, interval: float = 0.25, worker: WorkerProcess | None = None,
             what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    tail = f"\nworker log:\n{worker.log()[-4000:]}" if worker else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{tail}")


# --------------------------------------------------------------------------------------- data


@pytest.fixture(scope="session")
def tiny_reward_base(tmp_path_factory) -> Path:
    from tests.tiny_models import tiny_bert

    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def separable_records(n: int = 24) -> list[dict[str, str]]:
    """Trivially separable preferences: the chosen answer is always the polite one."""
    return [
        {"id": f"r{i}", "prompt": f"question number {i}?", "chosen": f"yes, happy to help with {i}!",
         "rejected": f"no. {i}"}
        for i in range(n)
    ]


def import_preferences(project, records: list[dict[str, str]]):
    from labeling.services.imports import project_data_import

    body = "\n".join(json.dumps(r) for r in records).encode()
    return project_data_import(project=project, stream=io.BytesIO(body), filename="prefs.jsonl")


def write_pairs_gz(path: Path, records: list[dict[str, str]]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return path


FAST_CONFIG = {"max_length": 48, "batch_size": 4, "epochs": 3, "lr": 2e-3, "val_fraction": 0.2, "warmup_fraction": 0.0,
               "precision": "fp32", "device": "cpu"}


def fast_params(base: Path, **config: Any) -> dict[str, Any]:
    return {"base": str(base), "config": {**FAST_CONFIG, **config}, "threads": 1}
