"""Load test of the annotator loop: next task, think, submit.

    .venv/bin/python bench/annotate_load.py --annotators 32 --seconds 20
    .venv/bin/python bench/annotate_load.py --annotators 300 --think-ms 3000 --seconds 30

It seeds a fresh project of 20,000 pairwise tasks in --database-url (a dedicated database, never
the test one), starts gunicorn on it (or targets --url, which must use the same database), and
runs every annotator as an asyncio task with a minimal HTTP/1.1 client. Each annotator is its
own user with its own keep-alive HTTP connection and session cookie, as a browser has.
Afterwards it checks the database for over-assigned tasks and duplicate judgments and prints
one JSON object.

cycle_p99_ms is the p99 of next + submit latency for one cycle, think time excluded.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the repository, for django and the `bench.` siblings

from bench.report import emit  # noqa: E402

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/bench_annotate"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--annotators", type=int, default=32)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--think-ms", type=float, default=0)
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--url", help="target a running server instead of starting gunicorn")
    p.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB))
    p.add_argument("--workers", type=int, default=3, help="gunicorn worker processes")
    p.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker (gthread)")
    p.add_argument("--worker-connections", type=int, default=0,
                   help="gthread: keep-alive connections one worker holds (0: annotators / workers, rounded up), "
                        "so long-lived client connections spread over every worker process")
    p.add_argument("--worker-class", default="gthread", choices=["gthread", "sync"],
                   help="sync workers close each connection, so the kernel spreads requests over all workers; "
                        "gthread keeps a client's keep-alive connection on the worker that accepted it")
    p.add_argument("--json", dest="json_path", help="also write the JSON result here")
    return p.parse_args()


def database_ensure(url: str) -> None:
    """Create the bench database when it does not exist yet (connecting to the server's postgres db)."""
    import psycopg2

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    conn = psycopg2.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username or "postgres",
                            password=parts.password, dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def django_setup(database_url: str) -> None:
    database_ensure(database_url)
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def seed(n_tasks: int, n_annotators: int, overlap: int = 1) -> tuple[str, list[tuple[str, str]]]:
    """A new pairwise project with n_tasks tasks, and one session (cookie, csrf) per annotator."""
    from django.contrib.auth import get_user_model
    from importlib import import_module

    from django.conf import settings
    from django.db import transaction

    from labeling.models import ComparisonTask, Membership, Prompt, Response, TaskResponse
    from labeling.services.projects import project_create

    stamp = f"{int(time.time())}-{secrets.token_hex(3)}"
    with transaction.atomic():
        project = project_create(name=f"bench {stamp}", slug=f"bench-{stamp}", mode="pairwise", overlap=overlap,
                                 lease_seconds=900)
        prompts = Prompt.objects.bulk_create(
            [Prompt(project=project, external_id=f"b{i}", text=f"Question {i}: explain *item* {i}.") for i in range(n_tasks)],
            batch_size=5000,
        )
        responses = Response.objects.bulk_create(
            [Response(prompt=p, text=f"Answer {side} to {p.external_id}:\n\n- a point\n- `code`", source=f"m{side}")
             for p in prompts for side in "AB"], batch_size=5000,
        )
        tasks = ComparisonTask.objects.bulk_create(
            [ComparisonTask(project=project, prompt=p) for p in prompts], batch_size=5000
        )
        TaskResponse.objects.bulk_create(
            [TaskResponse(task=t, response=responses[2 * i + j], position=j) for i, t in enumerate(tasks) for j in (0, 1)],
            batch_size=5000,
        )
    User = get_user_model()
    sessions = []
    for i in range(n_annotators):
        user, _ = User.objects.get_or_create(username=f"bench-annotator-{i}")
        Membership.objects.update_or_create(project=project, user=user, defaults={"role": "annotator"})
        store = import_module(settings.SESSION_ENGINE).SessionStore()
        store["_auth_user_id"] = str(user.pk)
        store["_auth_user_backend"] = settings.AUTHENTICATION_BACKENDS[0]
        store["_auth_user_hash"] = user.get_session_auth_hash()
        store.create()
        sessions.append((store.session_key, secrets.token_hex(16)))  # a 32-char CSRF secret
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE labeling_comparisontask; ANALYZE labeling_assignment; ANALYZE labeling_taskresponse")
    return project.slug, sessions


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(
    database_url: str, workers: int, threads: int, worker_class: str, worker_connections: int, log=None,
    preload: bool = False,
) -> tuple[subprocess.Popen, str]:
    """gunicorn on a free loopback port, in its own session (stop it with killpg); log: a file for
    its output; preload: import the app once in the master, so a respawned worker serves at once."""
    port = free_port()
    env = dict(os.environ, DATABASE_URL=database_url, DEBUG="0", CONN_MAX_AGE="600", LOG_LEVEL="WARNING")
    cmd = [
        str(ROOT / ".venv/bin/gunicorn"), "config.wsgi", "-b", f"127.0.0.1:{port}", "-k", worker_class,
        "--workers", str(workers), "--threads", str(threads), "--worker-connections", str(worker_connections), "--keep-alive", "75", "--backlog", "2048",
        "--log-level", "warning", *(["--preload"] if preload else []),
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=log, stderr=log)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("gunicorn did not start")


class Annotator:
    """One simulated annotator: its own keep-alive connection and session cookie, as a browser has.

    Annotators are coroutines on one event loop with a minimal HTTP/1.1 client: the load client
    shares this machine's two cores with the server and Postgres, and threads with http.client
    spent enough CPU (and GIL waits, which read as server latency) to distort the figures."""

    def __init__(self, base: str, slug: str, session: tuple[str, str], think_s: float):
        parts = urlsplit(base)
        self.host, self.port = parts.hostname, parts.port or 80
        self.slug, self.think_s, self.stop_at = slug, think_s, float("inf")
        session_key, csrf = session
        self.head = (
            f"Host: {self.host}:{self.port}\r\nCookie: sessionid={session_key}; csrftoken={csrf}\r\n"
            f"X-CSRFToken: {csrf}\r\nReferer: {base}/\r\nContent-Type: application/json\r\n"
            "Connection: keep-alive\r\n"
        )
        self.next_ms: list[float] = []
        self.submit_ms: list[float] = []
        self.cycle_ms: list[float] = []
        self.errors: list[str] = []
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: dict | None) -> tuple[int, dict]:
        data = json.dumps(body or {}).encode()
        request = f"POST {path} HTTP/1.1\r\n{self.head}Content-Length: {len(data)}\r\n\r\n".encode() + data
        for attempt in (0, 1):
            try:
                if self.writer is None:
                    self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                self.writer.write(request)
                return await self._response()
            except (OSError, asyncio.IncompleteReadError, ValueError):
                # A keep-alive connection the server closed while idle; a browser reconnects too.
                self._close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _response(self) -> tuple[int, dict]:
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower().split("\r\n")
        status = int(head[0].split()[1])
        headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
        payload = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection") == "close":
            self._close()
        return status, json.loads(payload) if payload else {}

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def run(self):
        # Paced annotators start spread over one think time, so the run does not open as one burst.
        await asyncio.sleep(random.uniform(0, self.think_s))
        while time.perf_counter() < self.stop_at:
            try:
                await self.cycle()
            except Exception as exc:  # noqa: BLE001 - counted as an error, the loop goes on
                self.errors.append(repr(exc))
                await asyncio.sleep(0.05)
        self._close()

    async def cycle(self):
        t0 = time.perf_counter()
        status, body = await self.post(f"/api/projects/{self.slug}/next/", None)
        t1 = time.perf_counter()
        if status != 200 or not body.get("current"):
            self.errors.append(f"next {status} {str(body)[:120]}")
            return
        self.next_ms.append((t1 - t0) * 1000)
        current = body["current"]
        if self.think_s:
            await asyncio.sleep(self.think_s)
        if time.perf_counter() >= self.stop_at:
            return
        ids = [r["id"] for r in current["responses"]]
        t2 = time.perf_counter()
        status, body = await self.post(f"/api/assignments/{current['assignment']}/submit/", {
            "ranking": [[ids[0]], [ids[1]]], "likert": {str(ids[0]): 6, str(ids[1]): 3},
            "time_spent_ms": int(self.think_s * 1000), "idempotency_key": secrets.token_hex(12),
        })
        t3 = time.perf_counter()
        if status != 201:
            self.errors.append(f"submit {status} {str(body)[:120]}")
            return
        self.submit_ms.append((t3 - t2) * 1000)
        self.cycle_ms.append((t1 - t0 + t3 - t2) * 1000)


async def drive(annotators: list[Annotator], seconds: float) -> float:
    """Run every annotator for `seconds`; returns the elapsed time.

    Each annotator first opens its connection with one untimed call, so that the workers'
    first-request imports and connection set-up fall outside the measured window."""
    await asyncio.gather(*(a.post(f"/api/projects/{a.slug}/next/", None) for a in annotators))
    started = time.perf_counter()
    for a in annotators:
        a.stop_at = started + seconds
    await asyncio.wait_for(asyncio.gather(*(a.run() for a in annotators)), timeout=seconds + 60)
    return time.perf_counter() - started


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def db_checks(slug: str) -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT id, overlap FROM labeling_project WHERE slug = %s", [slug])
        project_id, overlap = cursor.fetchone()
        cursor.execute(
            """SELECT count(*) FROM (SELECT task_id FROM labeling_assignment
               WHERE project_id = %s AND state IN ('active', 'submitted') GROUP BY task_id HAVING count(*) > %s) x""",
            [project_id, overlap],
        )
        over_assigned = cursor.fetchone()[0]
        cursor.execute(
            """SELECT count(*) FROM labeling_judgment j
               WHERE j.project_id = %s AND EXISTS (SELECT 1 FROM labeling_judgment o WHERE o.project_id = j.project_id
                 AND o.task_id = j.task_id AND o.annotator_id = j.annotator_id AND o.id < j.id)""",
            [project_id],
        )
        duplicates = cursor.fetchone()[0]
        cursor.execute(
            """SELECT count(*) FROM labeling_comparisontask t WHERE t.project_id = %s AND t.judgments_count <>
               (SELECT count(*) FROM labeling_judgment j WHERE j.task_id = t.id)""",
            [project_id],
        )
        counter_mismatch = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM labeling_judgment WHERE project_id = %s", [project_id])
        judgments = cursor.fetchone()[0]
    return {"over_assigned_tasks": over_assigned, "duplicate_judgments": duplicates,
            "counter_mismatches": counter_mismatch, "judgments_in_db": judgments}


def main() -> None:
    args = parse_args()
    django_setup(args.database_url)
    slug, sessions = seed(args.tasks, args.annotators)
    server = None
    base = args.url.rstrip("/") if args.url else None
    if base is None:
        server, base = start_gunicorn(
            args.database_url, args.workers, args.threads, args.worker_class,
            args.worker_connections or max(-(-args.annotators // args.workers) + 1, args.threads + 1),
        )
    try:
        annotators = [Annotator(base, slug, s, args.think_ms / 1000) for s in sessions]
        elapsed = asyncio.run(drive(annotators, args.seconds))
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    next_ms = [x for a in annotators for x in a.next_ms]
    submit_ms = [x for a in annotators for x in a.submit_ms]
    cycle_ms = [x for a in annotators for x in a.cycle_ms]
    errors = [e for a in annotators for e in a.errors]
    result = {
        "annotators": args.annotators, "think_ms": args.think_ms, "seconds": round(elapsed, 2),
        "cycles_per_s": round(len(cycle_ms) / elapsed, 1),
        "next_p50_ms": pct(next_ms, 0.50), "next_p99_ms": pct(next_ms, 0.99),
        "submit_p50_ms": pct(submit_ms, 0.50), "submit_p99_ms": pct(submit_ms, 0.99),
        "cycle_p99_ms": pct(cycle_ms, 0.99), "errors": len(errors),
        **db_checks(slug),
        "cycles": len(cycle_ms), "server": "external" if args.url else f"gunicorn {args.worker_class} {args.workers}x{args.threads}",
    }
    if errors:
        result["error_samples"] = sorted(set(errors))[:5]
    emit(result, args.json_path, indent=None)


if __name__ == "__main__":
    main()
