"""Postgres restarts under annotator load: the app must recover by itself, losing nothing acknowledged.

    .venv/bin/python bench/chaos_pg_restart.py --submissions 2000 --restart-after 10 --down-seconds 3

It never touches the system Postgres: it creates a throwaway cluster with initdb in a temp folder
(as the postgres OS user when run as root), starts it on a free loopback port, seeds a project in
it and runs gunicorn (persistent connections, CONN_MAX_AGE=600) and the annotators of
chaos_annotate.py against it. --restart-after seconds into the load it runs `pg_ctl stop -m fast`,
waits --down-seconds and starts the cluster again; the app is not restarted. The cluster and its
folder are removed at the end, also on Ctrl-C.

Besides chaos_annotate's figures it reports:
  outage_s              from the stop command until the cluster accepts connections again
  errors_during_outage  failed requests from the stop until the first success after it, by status
                        (503 is the clean answer; 500 or a reset connection is not)
  recovery_seconds      from the cluster accepting connections to the first successful request
  errors_after_recovery failed requests after that first success
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the repository, for the `bench.` siblings

from bench.annotate_load import start_gunicorn  # noqa: E402
from bench.chaos_annotate import add_load_args, run_load, seed_project, stop_gunicorn, verify  # noqa: E402
from bench.pg_cluster import ThrowawayCluster  # noqa: E402
from bench.report import emit  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--submissions", type=int, default=2000)
    p.add_argument("--annotators", type=int, default=32)
    p.add_argument("--restart-after", type=float, default=10, help="seconds of load before the stop")
    p.add_argument("--down-seconds", type=float, default=3.0)
    p.add_argument("--max-seconds", type=float, default=150)
    add_load_args(p)
    return p.parse_args()


def restarter(cluster: ThrowawayCluster, after: float, down: float, marks: dict) -> Callable[[threading.Event], None]:
    def restart(stop: threading.Event) -> None:
        if stop.wait(after):
            return
        marks["stop"] = time.monotonic()
        cluster.stop("fast")
        time.sleep(down)
        cluster.start()  # -w: returns once the cluster accepts connections
        marks["up"] = time.monotonic()
    return restart


def outage_report(annotators, marks: dict) -> dict:
    if "up" not in marks:
        return {"restarted": False}
    events = sorted(e for a in annotators for e in a.events)
    ok = {"200", "201"}
    first_ok = next((t for t, _, status in events if t >= marks["up"] and status in ok), None)
    end = first_ok if first_ok is not None else float("inf")
    during = Counter(status for t, _, status in events if marks["stop"] <= t < end and status not in ok)
    after = Counter(status for t, _, status in events if t >= end and status not in ok and status[0] != "4")
    return {
        "restarted": True, "outage_s": round(marks["up"] - marks["stop"], 2),
        "errors_during_outage": sum(during.values()), "errors_during_outage_by_status": dict(sorted(during.items())),
        "recovery_seconds": round(first_ok - marks["up"], 3) if first_ok is not None else None,
        "errors_after_recovery": sum(after.values()),
    }


def _interrupted(*_) -> None:
    # SIGTERM ends the run as Ctrl-C does, through the finally blocks that remove the cluster.
    raise KeyboardInterrupt


def server_log_counts(path: str) -> dict:
    text = Path(path).read_text(errors="replace")
    return {"server_500_logged": text.count("Internal Server Error"),
            "server_503_logged": text.count("database unavailable")}


def main() -> None:
    args = parse_args()
    cluster = ThrowawayCluster()
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        cluster.init()
        cluster.start()
        slug, sessions = seed_project(args, cluster.url)
        marks: dict[str, float] = {}
        log = open(cluster.root / "gunicorn.log", "w")
        server, base = start_gunicorn(cluster.url, args.workers, args.threads, "gthread",
                                      max(-(-args.annotators // args.workers) + 1, args.threads + 1),
                                  log=log, preload=args.preload)
        try:
            load = run_load(base, slug, sessions, submissions=args.submissions, max_seconds=args.max_seconds,
                            resend_share=args.resend_share,
                            fault=restarter(cluster, args.restart_after, args.down_seconds, marks))
        finally:
            stop_gunicorn(server)
        gunicorn_log = log.name
        log.close()
        result = {"submissions": args.submissions, "annotators": args.annotators, "overlap": args.overlap,
                  "restart_after_s": args.restart_after, "down_s": args.down_seconds,
                  **outage_report(load["annotators"], marks), **verify(slug, load),
                  **server_log_counts(gunicorn_log),
                  "server": f"gunicorn gthread {args.workers}x{args.threads}{' preload' if args.preload else ''}, "
                            f"private Postgres 15 on :{cluster.port}"}
    finally:
        cluster.remove()
    emit(result, args.json_path, indent=None)


if __name__ == "__main__":
    main()
