"""A lost database: requests answer 503 with Retry-After, nothing half-written stays, and the next
request reconnects by itself (no server restart)."""
from __future__ import annotations

import socket
from contextlib import contextmanager

import psycopg2
import pytest
from django.db import close_old_connections, connection

from labeling.models import Assignment, Judgment, PreferencePair
from labeling.selectors.integrity import integrity_problems
from tests.labeling.judging import make_tasks

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def annotating(project_factory, member, api_client):
    project = project_factory(mode="pairwise", likert_enabled=False, flags_enabled=False)
    make_tasks(project, 3)
    user = member(project, "annotator")
    return project, api_client(user, token=False)


def serve(client, url, body=None):
    """POST as a WSGI server runs it: close_old_connections() at the start and end of the request
    (the test client skips both), which is where Django drops broken and unhealthy connections."""
    close_old_connections()
    try:
        return client.post(url, body or {}, format="json")
    finally:
        close_old_connections()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def database_down():
    """Nothing listens on the database port any more, as while Postgres restarts."""
    port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())
    try:
        yield
    finally:
        connection.settings_dict["PORT"] = port


def terminate(pid: int) -> None:
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    with psycopg2.connect(**params) as other, other.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    other.close()


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def test_database_down_answers_503_then_recovers(annotating):
    project, client = annotating
    url = f"/api/projects/{project.slug}/next/"
    with database_down():
        res = serve(client, url)
        page = client.get(f"/label/{project.slug}/")
    assert res.status_code == 503 and res["Retry-After"] == "2"
    assert res.json()["code"] == "db_unavailable"
    assert page.status_code == 503 and page["Retry-After"] == "2" and b"retry" in page.content
    res = serve(client, url)
    assert res.status_code == 200, res.content
    assert Assignment.objects.filter(pk=res.json()["current"]["assignment"]).exists()


def test_connection_killed_while_idle_is_replaced_without_an_error(annotating):
    project, client = annotating
    url = f"/api/projects/{project.slug}/next/"
    assert serve(client, url).status_code == 200
    old = backend_pid()
    terminate(old)
    res = serve(client, url)
    assert res.status_code == 200, res.content
    assert backend_pid() != old


def test_submit_cut_off_mid_transaction_leaves_nothing_and_the_retry_stores_once(annotating):
    project, client = annotating
    current = serve(client, f"/api/projects/{project.slug}/next/").json()["current"]
    a, b = (r["id"] for r in current["responses"])
    url = f"/api/assignments/{current['assignment']}/submit/"
    body = {"ranking": [[a], [b]], "idempotency_key": "cut-off-1"}
    with connection.cursor() as cursor:  # the backend dies after the judgment row, before the commit
        cursor.execute("""
            CREATE FUNCTION chaos_die() RETURNS trigger LANGUAGE plpgsql AS
              $$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5); RETURN NEW; END $$;
            CREATE TRIGGER chaos_die BEFORE INSERT ON labeling_preferencepair FOR EACH ROW EXECUTE FUNCTION chaos_die();
        """)
    try:
        res = serve(client, url, body)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER chaos_die ON labeling_preferencepair; DROP FUNCTION chaos_die()")
    assert res.status_code == 503, res.content
    assert Judgment.objects.count() == 0 and Assignment.objects.get(pk=current["assignment"]).state == "active"
    res = serve(client, url, body)
    assert res.status_code == 201, res.content
    again = serve(client, url, body)
    assert again.status_code == 201 and again.json()["judgment"] == res.json()["judgment"]
    assert Judgment.objects.count() == 1 and PreferencePair.objects.count() == 1
    assert integrity_problems(project=project) == []
