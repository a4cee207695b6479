"""The annotator's HTTP hot path: next, submit, skip, status codes and what the page may see."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from labeling.models import Assignment, Judgment, PreferencePair, Prompt, Response
from tests.labeling.judging import make_tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(project_factory, member, api_client):
    project = project_factory(mode="rank", responses_per_task=4)
    make_tasks(project, 3)
    user = member(project, "annotator")
    return project, user, api_client(user, token=False)


def _next(client, project):
    return client.post(f"/api/projects/{project.slug}/next/", format="json")


def test_next_returns_current_and_prefetched(setup):
    project, user, client = setup
    res = _next(client, project)
    assert res.status_code == 200, res.content
    body = res.json()
    assert body["reason"] == "assigned" and body["mode"] == "rank"
    current, nxt = body["current"], body["next"]
    assert current["assignment"] != nxt["assignment"]
    assert len(current["responses"]) == 4
    assignment = Assignment.objects.get(pk=current["assignment"])
    assert [r["id"] for r in current["responses"]] == assignment.shown_order
    assert "is_gold" not in str(body) and "source" not in current["responses"][0]
    again = _next(client, project).json()
    assert again["reason"] == "active" and again["current"]["assignment"] == current["assignment"]


def test_submit_then_retry_then_conflicts(setup):
    project, user, client = setup
    current = _next(client, project).json()["current"]
    ids = [r["id"] for r in current["responses"]]
    body = {"ranking": [[i] for i in ids], "likert": {str(ids[0]): 6}, "flags": {str(ids[1]): ["hallucination"]},
            "rationale": "clear", "time_spent_ms": 4000, "idempotency_key": "key-1"}
    url = f"/api/assignments/{current['assignment']}/submit/"
    first = client.post(url, body, format="json")
    assert first.status_code == 201, first.content
    retry = client.post(url, body, format="json")
    assert retry.status_code == 201 and retry.json()["judgment"] == first.json()["judgment"]
    assert Judgment.objects.count() == 1 and PreferencePair.objects.count() == 6
    skip = client.post(f"/api/assignments/{current['assignment']}/skip/")
    assert skip.status_code == 409 and "submitted" in skip.json()["detail"]


def test_submit_validation_is_400_with_field(setup):
    project, user, client = setup
    current = _next(client, project).json()["current"]
    ids = [r["id"] for r in current["responses"]]
    res = client.post(f"/api/assignments/{current['assignment']}/submit/",
                      {"ranking": [[i] for i in ids[:3]], "likert": {str(ids[0]): 9}, "idempotency_key": "k"},
                      format="json")
    assert res.status_code == 400
    assert set(res.json()) >= {"ranking", "likert"}
    assert "missing responses" in res.json()["ranking"][0]


def test_foreign_and_expired_are_409(setup, member, api_client):
    project, user, client = setup
    current = _next(client, project).json()["current"]
    ids = [r["id"] for r in current["responses"]]
    body = {"ranking": [ids], "idempotency_key": "k"}
    other = api_client(member(project, "annotator"))
    res = other.post(f"/api/assignments/{current['assignment']}/submit/", body, format="json")
    assert res.status_code == 409 and "another annotator" in res.json()["detail"]
    Assignment.objects.filter(pk=current["assignment"]).update(expires_at=timezone.now() - timedelta(seconds=5))
    res = client.post(f"/api/assignments/{current['assignment']}/submit/", body, format="json")
    assert res.status_code == 409
    assert res.json()["code"] == "expired" and "expired" in res.json()["detail"]


def test_skip_then_next_never_repeats(setup):
    project, user, client = setup
    body = _next(client, project).json()
    res = client.post(f"/api/assignments/{body['current']['assignment']}/skip/")
    assert res.status_code == 200 and res.json()["state"] == "skipped"
    after = _next(client, project).json()
    assert after["current"]["assignment"] == body["next"]["assignment"]
    served = set(Assignment.objects.filter(annotator=user).values_list("task_id", flat=True))
    assert len(served) == 3  # two held plus the skipped one, each a different task


def test_roles_and_visibility(setup, member, api_client):
    project, user, client = setup
    viewer = api_client(member(project, "viewer"))
    assert _next(viewer, project).status_code == 404
    assert api_client().post(f"/api/projects/{project.slug}/next/").status_code in (401, 403)
    assert _next(client, type("P", (), {"slug": "nope"})).status_code == 404


def test_empty_queue(project_factory, member, api_client):
    project = project_factory(mode="pairwise")
    client = api_client(member(project, "annotator"))
    body = _next(client, project).json()
    assert body == {"reason": "empty", "mode": "pairwise", "current": None, "next": None}


def test_hostile_markdown_is_sanitized(project_factory, member, api_client):
    project = project_factory(mode="pairwise")
    prompt = Prompt.objects.create(project=project, external_id="x", text="**hi** <b onclick=x>")
    texts = ["<script>alert(1)</script>", "[click](javascript:alert(1)) <img src=x onerror=alert(2)>"]
    from labeling.models import ComparisonTask

    task = ComparisonTask.objects.create(project=project, prompt=prompt)
    for pos, text in enumerate(texts):
        task.slots.create(response=Response.objects.create(prompt=prompt, text=text, source="m"), position=pos)
    body = _next(api_client(member(project, "annotator")), project).json()
    html = " ".join(r["html"] for r in body["current"]["responses"]) + body["current"]["prompt"]["html"]
    assert "<script" not in html and "<img src" not in html and 'href="javascript' not in html
    assert "onclick=" not in html.replace("&lt;b onclick=x&gt;", "")
    assert "<strong>hi</strong>" in html


def test_next_and_submit_query_budget(setup):
    """The hot path stays small and flat: no COUNT, a fixed number of statements."""
    project, user, client = setup
    with CaptureQueriesContext(connection) as next_q:
        current = _next(client, project).json()["current"]
    ids = [r["id"] for r in current["responses"]]
    with CaptureQueriesContext(connection) as submit_q:
        client.post(f"/api/assignments/{current['assignment']}/submit/",
                    {"ranking": [[i] for i in ids], "idempotency_key": "b"}, format="json")
    for q in (next_q, submit_q):
        assert not any("__count" in x["sql"] for x in q.captured_queries)  # no .count() over the project
    assert len(next_q) <= 22, [x["sql"][:80] for x in next_q.captured_queries]
    assert len(submit_q) <= 10, [x["sql"][:80] for x in submit_q.captured_queries]


def test_k_way_ranking_that_contradicts_the_ratings_is_400(setup):
    """A response rated 7 ranked below one rated 2 is refused on the ranking field; ties and unrated
    responses are no contradiction, and the same ratings in their order are stored."""
    project, user, client = setup
    current = _next(client, project).json()["current"]
    a, b, c, d = [r["id"] for r in current["responses"]]
    likert = {str(a): 2, str(b): 7, str(c): 3}
    url = f"/api/assignments/{current['assignment']}/submit/"
    res = client.post(url, {"ranking": [[a], [b], [c], [d]], "likert": likert, "idempotency_key": "c1"}, format="json")
    assert res.status_code == 400, res.content
    assert res.json()["ranking"] == [f"response {a} (rated 2) is ranked above response {b} (rated 7): "
                                     "the ranking contradicts the ratings"]
    assert Judgment.objects.count() == 0 and PreferencePair.objects.count() == 0
    res = client.post(url, {"ranking": [[d], [b], [a, c]], "likert": likert, "idempotency_key": "c2"}, format="json")
    assert res.status_code == 201, res.content
    assert Judgment.objects.get().ranking == [[d], [b], [a, c]]


def test_pairwise_ranking_is_not_checked_against_ratings(project_factory, member, api_client):
    project = project_factory(mode="pairwise")
    make_tasks(project, 1)
    client = api_client(member(project, "annotator"), token=False)
    current = _next(client, project).json()["current"]
    a, b = [r["id"] for r in current["responses"]]
    res = client.post(f"/api/assignments/{current['assignment']}/submit/",
                      {"ranking": [[a], [b]], "likert": {str(a): 1, str(b): 7}, "idempotency_key": "p"}, format="json")
    assert res.status_code == 201, res.content
