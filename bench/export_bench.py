"""`manage.py export_preferences --format trl` against Postgres' own COPY of the same rows.

Seeds N preference pairs (about 1 KB each: prompt, chosen, rejected) with COPY into a dedicated
database, bench_export (never the shared test database), then times, warm:
  - the export command in a subprocess, writing a file; its peak RSS comes from wait4();
  - `COPY (SELECT prompt, chosen, rejected ...) TO STDOUT` of the same rows into a file: the limit.
Prints JSON: {"pairs", "export_s", "copy_s", "ratio", "peak_rss_mb", "bytes"}.

    .venv/bin/python bench/export_bench.py --pairs 100000
"""
from __future__ import annotations

import argparse
import io
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.report import emit  # noqa: E402

HOST = "postgres://postgres@127.0.0.1:5432"
SLUG = "bench"
WORDS = ("the model answer human prompt reward policy gradient token response preference label "
         "annotator ranking quality safety helpful honest harmless dataset export stream copy").split()


def text(rng: random.Random, chars: int) -> str:
    out, size = [], 0
    while size < chars:
        word = rng.choice(WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)


def ensure_database(name: str) -> str:
    url = f"{HOST}/{name}"
    admin = psycopg2.connect(f"{HOST}/postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if not cursor.fetchone():
            cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    return url


def _copy(cursor, table: str, columns: str, rows) -> None:
    buffer = io.StringIO()
    for row in rows:
        buffer.write("\t".join(row) + "\n")
    buffer.seek(0)
    cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN", buffer)


def seed(url: str, pairs: int, batch: int = 50_000) -> None:
    """One prompt, two responses, one task, one judgment and one pair per row, all written with COPY."""
    connection = psycopg2.connect(url)
    rng = random.Random(0)
    now = "2026-01-01 00:00:00+00"
    with connection, connection.cursor() as cursor:
        cursor.execute("TRUNCATE labeling_project RESTART IDENTITY CASCADE")
        cursor.execute(
            "INSERT INTO labeling_project (id, name, slug, instructions, mode, responses_per_task, overlap, "
            "likert_enabled, flags_enabled, custom_flags, lease_seconds, gold_rate, system_prompt, gen_temperature, "
            "gen_top_p, gen_max_new_tokens, retrain_min_judgments, created_at) VALUES (1, 'Bench', %s, '', "
            "'pairwise', 2, 1, true, true, '[]', 900, 0, '', 1, 0.95, 128, 100, now())", [SLUG])
        for start in range(1, pairs + 1, batch):
            ids = range(start, min(start + batch, pairs + 1))
            _copy(cursor, "labeling_prompt", "id, external_id, text, metadata, created_at, project_id",
                  ((str(i), f"bench/{i}", text(rng, 300), "{}", now, "1") for i in ids))
            _copy(cursor, "labeling_response", "id, text, source, generation, created_at, prompt_id",
                  ((str(2 * i - k), text(rng, 350), "bench", "{}", now, str(i)) for i in ids for k in (1, 0)))
            _copy(cursor, "labeling_comparisontask",
                  "id, is_gold, status, judgments_count, active_assignments, created_at, project_id, prompt_id",
                  ((str(i), "f", "complete", "1", "0", now, "1", str(i)) for i in ids))
            _copy(cursor, "labeling_taskresponse", "id, position, response_id, task_id",
                  ((str(2 * i - 1 + k), str(k), str(2 * i - 1 + k), str(i)) for i in ids for k in (0, 1)))
            _copy(cursor, "labeling_judgment",
                  "id, source, ranking, both_bad, likert, flags, rationale, shown_order, time_spent_ms, "
                  "idempotency_key, created_at, task_id, project_id",
                  ((str(i), "bench", f"[[{2 * i - 1}], [{2 * i}]]", "f", "{}", "{}", "", "[]", "0", f"bench:{i}",
                    now, str(i), "1") for i in ids))
            _copy(cursor, "labeling_preferencepair", "id, created_at, judgment_id, project_id, prompt_id, chosen_id, "
                  "rejected_id", ((str(i), now, str(i), "1", str(i), str(2 * i - 1), str(2 * i)) for i in ids))
        for table in ("prompt", "response", "comparisontask", "taskresponse", "judgment", "preferencepair"):
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('labeling_{table}', 'id'), "
                           f"(SELECT max(id) FROM labeling_{table}))")
    connection.close()
    vacuum = psycopg2.connect(url)
    vacuum.autocommit = True
    with vacuum.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    vacuum.close()


def seeded(url: str) -> int:
    connection = psycopg2.connect(url)
    with connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM labeling_preferencepair p JOIN labeling_project j ON j.id = p.project_id "
                       "WHERE j.slug = %s", [SLUG])
        count = cursor.fetchone()[0]
    connection.close()
    return count


def time_copy(url: str, path: Path) -> float:
    connection = psycopg2.connect(url)
    sql = ("COPY (SELECT pr.text, c.text, r.text FROM labeling_preferencepair p "
           "JOIN labeling_prompt pr ON pr.id = p.prompt_id JOIN labeling_response c ON c.id = p.chosen_id "
           "JOIN labeling_response r ON r.id = p.rejected_id WHERE p.project_id = 1) TO STDOUT")
    with open(path, "wb", buffering=1 << 20) as out, connection.cursor() as cursor:
        start = time.perf_counter()
        cursor.copy_expert(sql, out, size=1 << 16)
        elapsed = time.perf_counter() - start
    connection.close()
    return elapsed


def time_export(url: str, path: Path) -> tuple[float, float]:
    env = {**os.environ, "DATABASE_URL": url}
    command = [sys.executable, "manage.py", "export_preferences", "--project", SLUG, "--format", "trl",
               "--output", str(path), "--verbosity", "0"]
    # posix_spawn, not fork: a forked child starts with the parent's resident pages, and
    # ru_maxrss would count this process's seeding buffers as the export's.
    os.chdir(ROOT)
    start = time.perf_counter()
    pid = os.posix_spawn(sys.executable, command, env)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("export_preferences failed")
    return elapsed, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--database", default="bench_export")
    parser.add_argument("--repeat", type=int, default=2, help="Best of this many timed runs of each side.")
    args = parser.parse_args()
    if args.database in ("test", "postgres"):
        raise SystemExit("use a dedicated database")
    url = ensure_database(args.database)
    if seeded(url) != args.pairs:
        started = time.perf_counter()
        seed(url, args.pairs)
        print(f"seeded {args.pairs} pairs in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=ROOT / "var" if (ROOT / "var").is_dir() else None) as folder:
        copy_path, export_path = Path(folder) / "copy.tsv", Path(folder) / "export.jsonl"
        time_copy(url, copy_path)  # warm the cache
        copy_s = min(time_copy(url, copy_path) for _ in range(args.repeat))
        runs = [time_export(url, export_path) for _ in range(args.repeat)]
        export_s, rss = min(r[0] for r in runs), max(r[1] for r in runs)
        with open(export_path, "rb") as f:
            rows = sum(1 for _ in f)
        if rows != args.pairs:
            raise SystemExit(f"export wrote {rows} rows, expected {args.pairs}")
        emit({"pairs": args.pairs, "export_s": round(export_s, 3), "copy_s": round(copy_s, 3),
              "ratio": round(export_s / copy_s, 3), "peak_rss_mb": round(rss, 1),
              "bytes": export_path.stat().st_size}, indent=None)


if __name__ == "__main__":
    main()
