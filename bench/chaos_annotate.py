"""Crash test of the annotator loop: a gunicorn worker is killed with SIGKILL every few seconds.

    .venv/bin/python bench/chaos_annotate.py --submissions 10000 --annotators 32 --kill-every 5

It seeds a pairwise project (overlap 2) in a dedicated database (bench_chaos on the local Postgres,
created when missing; never the test database), starts gunicorn on loopback, and runs one
annotator per session with its own keep-alive connection, on annotate_load.py's client. A failed
request (connection reset, any 5xx) is sent again with the same body, idempotency key included,
as the labeling page does. Every --kill-every seconds one random worker process gets SIGKILL;
gunicorn's master starts a new one. A share of acknowledged submits is sent once more (a double
click) to see that the same judgment comes back.

Afterwards the database is checked against what the clients were told:
  acknowledged        submits answered 201 (the client keeps key -> judgment id)
  stored              judgments in the project
  lost                acknowledged, but no judgment with that id and key in the database
  duplicates          judgments sharing a (task, annotator), plus keys answered with two ids
  over_assigned       tasks with more active + submitted assignments than overlap
  integrity_problems  labeling.selectors.integrity.integrity_problems for the project
  submit_p99_ms       from the first send of a submit to its 201, retries included
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the repository, for the `bench.` siblings

from bench.annotate_load import Annotator, db_checks, django_setup, pct, seed, start_gunicorn  # noqa: E402
from bench.report import emit  # noqa: E402

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/bench_chaos"
RETRY_STATUSES = frozenset({500, 502, 503, 504})
REQUEST_TIMEOUT_S = 30


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--submissions", type=int, default=10_000, help="acknowledged submits to reach")
    p.add_argument("--annotators", type=int, default=32)
    p.add_argument("--kill-every", type=float, default=5.0, help="seconds between worker kills (0: none)")
    p.add_argument("--max-seconds", type=float, default=240, help="stop the load after this long, done or not")
    p.add_argument("--database-url", default=os.environ.get("CHAOS_DATABASE_URL", DEFAULT_DB))
    add_load_args(p)
    return p.parse_args()


def add_load_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overlap", type=int, default=2)
    p.add_argument("--tasks", type=int, default=0, help="0: enough seats for every submission")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--no-preload", dest="preload", action="store_false",
                   help="each respawned worker imports the app itself (seconds on a busy machine)")
    p.add_argument("--resend-share", type=float, default=0.05, help="acknowledged submits sent once more")
    p.add_argument("--json", dest="json_path", help="also write the JSON result here")


# --- the database ---------------------------------------------------------------------------------

def seed_project(args, database_url: str) -> tuple[str, list[tuple[str, str]]]:
    django_setup(database_url)
    tasks = args.tasks or -(-args.submissions * 11 // (10 * args.overlap)) + 4 * args.annotators
    return seed(tasks, args.annotators, overlap=args.overlap)


# --- the clients ----------------------------------------------------------------------------------

class Budget:
    """Submissions still to acknowledge, shared by all annotators (one event loop: no lock)."""

    def __init__(self, total: int):
        self.left = total

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True

    def give_back(self) -> None:
        self.left += 1


class ChaosAnnotator(Annotator):
    """next, then submit, each sent again with the same body until an answer that is not 5xx.

    annotate_load's client, one attempt per send: every reset and 5xx is recorded, and a 5xx
    whose body is an HTML error page is counted by its status rather than read as a reset."""

    def __init__(self, base: str, slug: str, session: tuple[str, str], budget: Budget, resend_share: float):
        super().__init__(base, slug, session, 0.0)
        self.budget, self.resend_share = budget, resend_share
        self.acked: list[tuple[str, int]] = []  # (idempotency key, judgment id)
        self.events: list[tuple[float, str, str]] = []  # (monotonic time, "next"/"submit", status or "conn")
        self.resent = self.resend_mismatches = self.abandoned = 0

    async def _response(self) -> tuple[int, dict]:
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower().split("\r\n")
        headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
        payload = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection") == "close":
            self._close()
        try:
            return int(head[0].split()[1]), json.loads(payload) if payload else {}
        except ValueError:
            return int(head[0].split()[1]), {"raw": payload[:120].decode(errors="replace")}

    async def send_once(self, path: str, body: dict | None) -> tuple[int, dict]:
        data = json.dumps(body or {}).encode()
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.write(f"POST {path} HTTP/1.1\r\n{self.head}Content-Length: {len(data)}\r\n\r\n".encode() + data)
            return await asyncio.wait_for(self._response(), REQUEST_TIMEOUT_S)
        except BaseException:
            self._close()
            raise

    async def call(self, kind: str, path: str, body: dict | None) -> tuple[int | None, dict]:
        """The answer, or (None, {}) when the run ended while the request still failed."""
        attempt = 0
        while True:
            try:
                status, data = await self.send_once(path, body)
                self.events.append((time.monotonic(), kind, str(status)))
                if status not in RETRY_STATUSES:
                    return status, data
                if status == 500:
                    self.errors.append(f"{kind} 500 {str(data)[:120]}")
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError) as exc:
                self.events.append((time.monotonic(), kind, "conn"))
                self.errors.append(f"{kind} {type(exc).__name__}")
            if time.monotonic() >= self.stop_at:
                return None, {}
            # Our own backoff, at most 1 s (below the server's Retry-After), so the recovery shows promptly.
            await asyncio.sleep(min(1.0, 0.05 * 2 ** min(attempt, 5)))
            attempt += 1

    async def run(self):
        while time.monotonic() < self.stop_at:
            try:
                if not await self.cycle():
                    break
            except Exception as exc:  # noqa: BLE001 - counted as an error, the loop goes on
                self.errors.append(repr(exc))
                await asyncio.sleep(0.05)
        self._close()

    async def cycle(self) -> bool:
        status, body = await self.call("next", f"/api/projects/{self.slug}/next/", None)
        if status != 200:
            if status is not None:
                self.errors.append(f"next {status} {str(body)[:120]}")
                await asyncio.sleep(0.05)
            return status is not None
        current = body.get("current")
        if not current or not self.budget.take():
            return False  # the project ran out of seats, or enough submits are acknowledged
        ids = [r["id"] for r in current["responses"]]
        submit = {"ranking": [[ids[0]], [ids[1]]], "likert": {str(ids[0]): 6, str(ids[1]): 3},
                  "time_spent_ms": 1000, "idempotency_key": secrets.token_hex(12)}
        path = f"/api/assignments/{current['assignment']}/submit/"
        t0 = time.perf_counter()
        status, body = await self.call("submit", path, submit)
        if status != 201:
            self.budget.give_back()
            self.abandoned += status is None
            if status is not None:
                self.errors.append(f"submit {status} {str(body)[:120]}")
            return True
        self.submit_ms.append((time.perf_counter() - t0) * 1000)
        self.acked.append((submit["idempotency_key"], body["judgment"]))
        if random.random() < self.resend_share:
            await self.resend(path, submit, body["judgment"])
        return True

    async def resend(self, path: str, submit: dict, judgment_id: int) -> None:
        """A double click: the same submit again must answer 201 with the same judgment."""
        self.resent += 1
        status, body = await self.call("submit", path, submit)
        # None: the run ended while the resend still failed, which tells nothing.
        if status is not None and (status != 201 or body.get("judgment") != judgment_id):
            self.resend_mismatches += 1
            self.errors.append(f"resend {status} {str(body)[:120]} after judgment {judgment_id}")


def run_load(base: str, slug: str, sessions: list[tuple[str, str]], *, submissions: int, max_seconds: float,
             resend_share: float, fault: Callable[[threading.Event], None] | None = None) -> dict:
    """All annotators, on one event loop, until `submissions` are acknowledged or max_seconds pass;
    `fault` runs in its own thread meanwhile and must return once the event is set."""
    budget = Budget(submissions)
    annotators = [ChaosAnnotator(base, slug, s, budget, resend_share) for s in sessions]
    stop = threading.Event()
    saboteur = threading.Thread(target=fault, args=(stop,), daemon=True) if fault else None

    async def drive() -> float:
        started = time.monotonic()
        for a in annotators:
            a.stop_at = started + max_seconds
        if saboteur:
            saboteur.start()
        await asyncio.wait_for(asyncio.gather(*(a.run() for a in annotators)), max_seconds + 60)
        return started

    try:
        started = asyncio.run(drive())
    finally:
        stop.set()
        if saboteur and saboteur.is_alive():
            saboteur.join(timeout=60)
    return {"annotators": annotators, "started": started, "seconds": time.monotonic() - started}


# --- the fault ------------------------------------------------------------------------------------

def worker_pids(master: int) -> list[int]:
    """gunicorn's worker processes: the master's children, from /proc."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == master:
            pids.append(int(entry.name))
    return pids


def worker_killer(master: int, every: float, kills: list[tuple[float, int]]) -> Callable[[threading.Event], None]:
    def kill_loop(stop: threading.Event) -> None:
        while not stop.wait(every):
            pids = worker_pids(master)
            if pids:
                victim = random.choice(pids)
                os.kill(victim, signal.SIGKILL)
                kills.append((time.monotonic(), victim))
    return kill_loop


@contextmanager
def uninterrupted():
    """Clean-up that a second Ctrl-C must not cut short (it would leave servers behind)."""
    held = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in held.items():
            signal.signal(sig, handler)


def stop_gunicorn(server) -> None:
    with uninterrupted():
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        except ProcessLookupError:
            pass
        except Exception:  # noqa: BLE001 - a hung master must not keep the bench alive
            os.killpg(server.pid, signal.SIGKILL)


# --- the verdict ----------------------------------------------------------------------------------

def verify(slug: str, load: dict) -> dict:
    """What the clients were told against what the database holds."""
    from django.db import connection

    from labeling.models import Judgment, Project
    from labeling.selectors.integrity import integrity_problems

    connection.close()  # the bench's own connection may predate a database restart
    annotators = load["annotators"]
    acked = [pair for a in annotators for pair in a.acked]
    project = Project.objects.get(slug=slug)
    stored = dict(Judgment.objects.filter(project=project).values_list("idempotency_key", "id"))
    lost = sum(stored.get(key) != judgment_id for key, judgment_id in acked)
    ids_by_key: dict[str, set[int]] = {}
    for key, judgment_id in acked:
        ids_by_key.setdefault(key, set()).add(judgment_id)
    checks = db_checks(slug)
    duplicates = {"per_task_and_annotator": checks["duplicate_judgments"],
                  "per_key": sum(len(ids) > 1 for ids in ids_by_key.values()),
                  "resend_mismatches": sum(a.resend_mismatches for a in annotators)}
    problems = integrity_problems(project=project)
    statuses = Counter(status for a in annotators for _, _, status in a.events)
    errors = [e for a in annotators for e in a.errors]
    acked_ids = {judgment_id for _, judgment_id in acked}
    samples = [e for e in sorted(set(errors)) if not any(w in e for w in ("Error", "Disconnected", "IncompleteRead"))]
    return {
        "acknowledged": len(acked), "stored": len(stored), "lost": lost,
        "duplicates": sum(duplicates.values()), "over_assigned": checks["over_assigned_tasks"],
        "integrity_problems": len(problems),
        "stored_not_acknowledged": sum(jid not in acked_ids for jid in stored.values()),
        "abandoned": sum(a.abandoned for a in annotators),
        "resent": sum(a.resent for a in annotators), "duplicates_detail": duplicates,
        "seconds": round(load["seconds"], 1), "acked_per_s": round(len(acked) / load["seconds"], 1),
        "submit_p50_ms": pct([x for a in annotators for x in a.submit_ms], 0.5),
        "submit_p99_ms": pct([x for a in annotators for x in a.submit_ms], 0.99),
        "requests": sum(statuses.values()), "connection_errors": statuses.pop("conn", 0),
        "http_statuses": dict(sorted(statuses.items())),
        **({"integrity_samples": [str(p) for p in problems[:5]]} if problems else {}),
        "client_errors": dict(Counter(" ".join(e.split(" ", 2)[:2]) for e in errors).most_common(8)),
        **({"error_samples": samples[:5]} if samples else {}),
    }


def main() -> None:
    args = parse_args()
    slug, sessions = seed_project(args, args.database_url)
    kills: list[tuple[float, int]] = []
    log = tempfile.NamedTemporaryFile(prefix="chaos-gunicorn-", suffix=".log", delete=False)
    server, base = start_gunicorn(args.database_url, args.workers, args.threads, "gthread",
                                  max(-(-args.annotators // args.workers) + 1, args.threads + 1),
                                  log=log, preload=args.preload)
    try:
        fault = worker_killer(server.pid, args.kill_every, kills) if args.kill_every > 0 else None
        load = run_load(base, slug, sessions, submissions=args.submissions, max_seconds=args.max_seconds,
                        resend_share=args.resend_share, fault=fault)
    finally:
        stop_gunicorn(server)
    result = {"submissions": args.submissions, "annotators": args.annotators, "kill_every_s": args.kill_every,
              "workers_killed": len(kills), "overlap": args.overlap, **verify(slug, load),
              "server": f"gunicorn gthread {args.workers}x{args.threads}{' preload' if args.preload else ''}", "project": slug,
              "gunicorn_log": log.name}
    emit(result, args.json_path, indent=None)


if __name__ == "__main__":
    main()
