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
from safetensors.torch import load_file

from labeling.models import ComparisonTask, Judgment, Prompt, Response, TaskResponse
from labeling.services.assignment import Verdict, judgment_submit, task_assign_next
from labeling.services.imports import project_data_import
from training import tasks
from training.models import ModelVersion, TrainingRun
from training.services.policy import policy_train
from training.services.reward import reward_model_train
from training.services.runs import run_create
from training.services.versions import base_models_install

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


def import_preferences(project, records: list[dict[str, str]], **options):
    from labeling.services.imports import project_data_import

    body = "\n".join(json.dumps(r) for r in records).encode()
    return project_data_import(project=project, stream=io.BytesIO(body), filename="prefs.jsonl", **options)


def write_pairs_gz(path: Path, records: list[dict[str, str]]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return path


FAST_CONFIG = {"max_length": 48, "batch_size": 4, "epochs": 3, "lr": 2e-3, "val_fraction": 0.2, "warmup_fraction": 0.0,
               "precision": "fp32", "device": "cpu"}


def fast_params(base: Path, **config: Any) -> dict[str, Any]:
    return {"base": str(base), "config": {**FAST_CONFIG, **config}, "threads": 1}


def requestable(params: dict[str, Any]) -> dict[str, Any]:
    """Params as a request may give them (a round's step_params, say): without the operator's knobs
    (device, threads: settings) and without a backbone path (the installed shared base is used)."""
    operator = {"device", "threads", "base"}
    out = {k: v for k, v in params.items() if k not in operator}
    if "config" in out:
        out["config"] = {k: v for k, v in out["config"].items() if k != "device"}
    return out


# ------------------------------------------------ shared by the services, APIs and end-to-end tests

SFT_FAST = {"epochs": 2, "lr": 1e-2, "batch_size": 4, "micro_batch_size": 4, "warmup_ratio": 0.0, "precision": "fp32",
            "device": "cpu", "max_length": 96}


DPO_FAST = {"epochs": 1, "lr": 1e-2, "batch_size": 4, "micro_batch_size": 2, "warmup_ratio": 0.0, "precision": "fp32",
            "device": "cpu", "max_length": 96, "beta": 0.5}


PPO_FAST = {"iterations": 2, "rollout_batch_size": 4, "mini_batch_size": 2, "micro_batch_size": 2, "ppo_epochs": 1,
            "max_new_tokens": 6, "lr": 1e-2, "value_lr": 1e-2, "precision": "fp32", "device": "cpu", "rm_max_length": 64}


EVAL_FAST = {"max_new_tokens": 6, "device": "cpu", "precision": "fp32", "threads": 1, "max_prompts": 6, "max_demonstrations": 6}


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory):
    from tests.tiny_models import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def weights(folder: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / "model.safetensors"))


def changed(a: str | Path, b: str | Path) -> bool:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    return any(not torch.equal(wa[k], wb[k]) for k in wa)


def import_records(project, records):
    body = "\n".join(json.dumps(r) for r in records).encode()
    return project_data_import(project=project, stream=io.BytesIO(body), filename="data.jsonl")


def demonstrations(n: int = 8, start: int = 0) -> list[dict[str, str]]:
    return [{"id": f"q{i}", "prompt": f"question number {i}?", "demonstration": f"yes, happy to help with {i}!"}
            for i in range(start, start + n)]


# q10..q21: the product's split (labeling.splits) holds q15 and q16 out, so evaluation has held-out demonstrations.
DEMO_START = 10


def train_reward(project, tiny_reward_base) -> ModelVersion:
    run = run_create(project=project, kind=TrainingRun.Kind.REWARD, params=fast_params(tiny_reward_base, epochs=2))
    version = reward_model_train(run_id=run.pk)
    assert version is not None and version.promoted, TrainingRun.objects.get(pk=run.pk).error
    return version


@pytest.fixture
def setup(project_factory, tiny_policy, tiny_reward_base, models_dir):
    """A project with 12 prompts (demonstrations and preference pairs on each) and the tiny base policy."""
    installed = base_models_install(policy_dir=tiny_policy, reward_base_dir=tiny_reward_base)
    # 12 prompts hold out too few groups to measure a reward model: its runs promote without that check.
    project = project_factory(gen_max_new_tokens=6, system_prompt="Be brief.", reward_promote_min_heldout_groups=0)
    import_preferences(project, [dict(r, id=f"q{i}") for i, r in enumerate(separable_records(12))])
    import_records(project, demonstrations(12, start=DEMO_START))
    return project, installed[ModelVersion.Kind.POLICY]


def policy_run(project, kind, config, **params) -> tuple[TrainingRun, ModelVersion | None]:
    run = run_create(project=project, kind=kind, params={"config": config, "threads": 1, **params})
    version = policy_train(run_id=run.pk)
    run.refresh_from_db()
    return run, version


@pytest.fixture
def sent(monkeypatch):
    """(task name, run id) of every task sent, in order."""
    out: list[tuple[str, int]] = []
    for name in TASKS:
        monkeypatch.setattr(getattr(tasks, name), "delay", lambda name=name, **kw: out.append((name, kw["run_id"])))
    return out


def round_step(pipeline_id, kind) -> TrainingRun:
    return TrainingRun.objects.get(pipeline_id=pipeline_id, kind=kind)


@pytest.fixture
def no_broker(monkeypatch):
    sent = []
    monkeypatch.setattr(tasks.reward_model_train, "delay", lambda **kw: sent.append(kw))
    return sent


@pytest.fixture
def trained(project_factory, tiny_reward_base, models_dir, django_db_blocker):
    """A project with a trained, promoted reward version (trained in process, once per test; its few
    held-out prompts cannot measure it, so the project promotes without that check)."""
    project = project_factory(reward_promote_min_heldout_groups=0)
    import_preferences(project, separable_records(24))
    run = run_create(project=project, kind=TrainingRun.Kind.REWARD, params=fast_params(tiny_reward_base, epochs=8))
    version = reward_model_train(run_id=run.pk)
    assert version is not None, TrainingRun.objects.get(pk=run.pk).error
    return project, version


REWARD = TrainingRun.Kind.REWARD


def ranked_task(project, prompt_text: str, texts: list[str]):
    prompt = Prompt.objects.create(project=project, external_id=prompt_text, text=prompt_text)
    task = ComparisonTask.objects.create(project=project, prompt=prompt)
    responses = [Response.objects.create(prompt=prompt, text=t, source="test") for t in texts]
    for i, r in enumerate(responses):
        TaskResponse.objects.create(task=task, response=r, position=i)
    return task, responses


def judge(project, task, ranking, key, **fields):
    return Judgment.objects.create(project=project, task=task, ranking=ranking, idempotency_key=key, **fields)


TASKS = ("reward_model_train", "policy_train", "policy_evaluate", "candidates_generate")


def judge_all(project, user, prefer) -> int:
    """Judge every task the annotator is given: prefer(response) -> bool picks the winner."""
    n = 0
    while True:
        nxt = task_assign_next(annotator=user, project=project)
        if nxt.assignment is None:
            return n
        ids = list(nxt.assignment.shown_order)
        responses = {r.pk: r for r in Response.objects.filter(pk__in=ids)}
        winner = next((i for i in ids if prefer(responses[i])), ids[0])
        loser = [i for i in ids if i != winner]
        judgment_submit(assignment=nxt.assignment, annotator=user,
                        verdict=Verdict(ranking=[[winner], loser], flags={str(loser[0]): ["hallucination"]}),
                        idempotency_key=f"k{nxt.assignment.pk}")
        n += 1


def import_prompts(project, n):
    body = "\n".join(json.dumps({"prompt": f"say something about {i}"}) for i in range(n)).encode()
    project_data_import(project=project, stream=io.BytesIO(body), filename="prompts.jsonl")



class PrivateRedis:
    """A throwaway redis-server on a free loopback port that keeps nothing on disk, like the default
    Redis broker: restart() loses every queued message (the system Redis is never touched)."""

    def __init__(self, folder: Path):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.folder, self.proc = folder, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        wait_for(lambda: _pings(client), timeout=20, what="the private redis-server")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def queued(self, queue: str) -> int:
        import redis

        return redis.Redis(port=self.port).llen(queue)


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


@pytest.fixture
def private_redis(tmp_path) -> PrivateRedis:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()
