"""The console's data browser at scale: keyset pages (what the data tab does) against OFFSET pages with
a COUNT (what Django's Paginator and DRF's PageNumberPagination do), on the same rows, in one run.

Seeds N preference rows (prompt, two responses, task, judgment, pair; bench/export_bench.py's seed) into
the bench_console database (never the test database), marks 1% of judgments as one annotator's and 10%
of tasks open, then times, warm, median of --repeat:
  - page_ms: the whole data page (the Django view, template included) for the first page, a page 90%
    deep, and filtered pages (annotator, task status, response source, a date range);
  - keyset_ms: the page's query alone (labeling.selectors.console.browse_page);
  - offset_ms: the same rows fetched with OFFSET at the same depth plus the COUNT a paginator needs.
Prints JSON: per case {"page_ms", "keyset_ms", "offset_ms", "ratio"} (offset over keyset), and "rows".

    .venv/bin/python bench/console_browse.py --rows 1000000 [--repeat 5] [--json out.json]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.export_bench import SLUG, ensure_database, seed, seeded  # noqa: E402
from bench.report import emit  # noqa: E402

DATABASE = "bench_console"
ANNOTATOR = "bench-annotator"


def mark(url: str) -> None:
    """One annotator owns every 100th judgment; every 10th task is open."""
    connection = psycopg2.connect(url)
    with connection, connection.cursor() as cursor:
        cursor.execute("INSERT INTO auth_user (username, password, is_superuser, first_name, last_name, email, is_staff, "
                       "is_active, date_joined) VALUES (%s, '!', true, '', '', '', true, true, now()) "
                       "ON CONFLICT (username) DO NOTHING", [ANNOTATOR])
        cursor.execute("UPDATE labeling_judgment SET annotator_id = (SELECT id FROM auth_user WHERE username = %s) "
                       "WHERE id %% 100 = 0", [ANNOTATOR])
        cursor.execute("UPDATE labeling_comparisontask SET status = 'open' WHERE id % 10 = 0")
    connection.close()


def timed(fn, repeat: int) -> float:
    fn()  # warm
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(samples), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    url = ensure_database(DATABASE)
    if seeded(url) != args.rows:
        seed(url, args.rows)
    mark(url)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.test import Client

    from labeling.models import ComparisonTask, Judgment, Project, Prompt, Response
    from labeling.selectors.console import BrowseFilters, browse_page

    client = Client()
    client.force_login(get_user_model().objects.get(username=ANNOTATOR))  # a superuser: admin of every project
    page_url = f"/projects/{SLUG}/data/"
    deep = args.rows // 10  # ids are 1..N, newest first: `before` this id is 90% of the way down
    cases = {
        "first_page": ({"view": "prompts"}, lambda: Prompt.objects.filter(project__slug=SLUG)),
        "deep_page": ({"view": "prompts", "before": deep}, lambda: Prompt.objects.filter(project__slug=SLUG)),
        "annotator": ({"view": "judgments", "annotator": ANNOTATOR},
                      lambda: Judgment.objects.filter(project__slug=SLUG, annotator__username=ANNOTATOR)),
        "open_tasks": ({"view": "tasks", "status": "open"},
                       lambda: ComparisonTask.objects.filter(project__slug=SLUG, status="open")),
        "source": ({"view": "responses", "source": "bench"},
                   lambda: Response.objects.filter(prompt__project__slug=SLUG, source="bench")),
        "date_range": ({"view": "judgments", "since": "2026-01-01", "until": "2026-01-01"},
                       lambda: Judgment.objects.filter(project__slug=SLUG, created_at__date="2026-01-01")),
    }
    project = Project.objects.get(slug=SLUG)
    out: dict = {"rows": args.rows, "cases": {}}
    for name, (query, baseline) in cases.items():
        filters = {k: v for k, v in query.items() if k not in ("view", "before")}
        if "since" in filters:
            from datetime import date
            filters = {"since": date.fromisoformat(filters["since"]), "until": date.fromisoformat(filters["until"])}

        def page():
            response = client.get(page_url, query)
            assert response.status_code == 200, response.content[:500]

        def keyset():
            browse_page(project=project, view=query["view"], filters=BrowseFilters(**filters), before=query.get("before"))

        offset = args.rows - deep if "before" in query else 0

        def paginated():
            rows = baseline().order_by("-id")
            rows.count()
            list(rows.values("id")[offset: offset + 50])

        p, k, o = timed(page, args.repeat), timed(keyset, args.repeat), timed(paginated, args.repeat)
        out["cases"][name] = {"page_ms": p, "keyset_ms": k, "offset_ms": o, "ratio": round(o / k, 2)}
    emit(out, args.json)


if __name__ == "__main__":
    main()
