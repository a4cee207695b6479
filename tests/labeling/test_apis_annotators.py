"""The annotator actions of the API (labeling.apis.annotators): exclude, re-include, re-queue."""
from __future__ import annotations

import pytest
from django.urls import reverse

from labeling.models import ComparisonTask, Judgment, Membership
from labeling.services.assignment import task_assign_next
from tests.labeling.judging import make_tasks, submit

pytestmark = pytest.mark.django_db

ACTIONS = ["api-annotator-exclude", "api-annotator-include", "api-annotator-requeue"]


@pytest.fixture
def world(project_factory, member):
    """Overlap 1: the spammer judged the first task (complete) and holds a lease on the second."""
    project = project_factory(mode="pairwise", overlap=1)
    first, second = make_tasks(project, 2)
    admin, viewer, spammer = member(project, "admin"), member(project, "viewer"), member(project, "annotator")
    submit(task_assign_next(annotator=spammer, project=project).assignment, spammer)
    return project, admin, viewer, spammer, (first, second)


def url(name: str, project, user_id: int) -> str:
    return reverse(name, kwargs={"slug": project.slug, "user_id": user_id})


def state(project, user) -> tuple:
    return Membership.objects.values_list("excluded_at", "exclusion_reason").get(project=project, user=user)


def test_exclude_include_and_requeue(world, api_client):
    project, admin, _, spammer, (first, second) = world
    client = api_client(admin)

    response = client.post(url("api-annotator-exclude", project, spammer.pk), {"reason": "random"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["excluded_at"] is not None
    assert {k: v for k, v in body.items() if k != "excluded_at"} == {
        "user_id": spammer.pk, "username": spammer.username, "role": "annotator", "excluded": True,
        "excluded_by": admin.username, "exclusion_reason": "random"}
    assert ComparisonTask.objects.get(pk=second.pk).active_assignments == 0
    refused = api_client(spammer).post(reverse("api-next", args=[project.slug]))
    assert (refused.status_code, refused.json()["reason"], refused.json()["current"]) == (200, "excluded", None)

    response = client.post(url("api-annotator-requeue", project, spammer.pk))
    assert (response.status_code, response.json()) == (200, {"reopened": 1})
    assert ComparisonTask.objects.get(pk=first.pk).status == "open"
    assert client.post(url("api-annotator-requeue", project, spammer.pk)).json() == {"reopened": 0}
    assert Judgment.objects.filter(annotator=spammer).count() == 1

    response = client.post(url("api-annotator-include", project, spammer.pk))
    assert response.status_code == 200
    assert {k: response.json()[k] for k in ("excluded", "excluded_at", "excluded_by", "exclusion_reason")} == {
        "excluded": False, "excluded_at": None, "excluded_by": None, "exclusion_reason": ""}
    assert state(project, spammer) == (None, "")


@pytest.mark.parametrize("name", ACTIONS)
def test_a_non_member_is_a_400_on_user(world, api_client, make_user, project_factory, member, name):
    project, admin, *_ = world
    client = api_client(admin)
    for user_id in (make_user().pk, member(project_factory(), "annotator").pk, 999_999):
        response = client.post(url(name, project, user_id), {}, format="json")
        assert response.status_code == 400 and set(response.json()) == {"user"}, response.content


def test_bad_reasons_are_400_on_reason(world, api_client):
    project, admin, _, spammer, _ = world
    client = api_client(admin)
    for reason in ("x" * 2001, ["a list"], "nul\x00"):
        response = client.post(url("api-annotator-exclude", project, spammer.pk), {"reason": reason}, format="json")
        assert response.status_code == 400 and set(response.json()) == {"reason"}, (reason, response.content)
    assert state(project, spammer) == (None, "")


@pytest.mark.parametrize("name", ACTIONS)
def test_only_this_projects_admins_may(world, api_client, project_factory, member, name):
    project, admin, viewer, spammer, (first, second) = world
    if name == "api-annotator-include":
        Membership.objects.filter(project=project, user=spammer).update(excluded_at="2026-01-01T00:00:00Z")
    before = state(project, spammer)
    other_admin = member(project_factory(), "admin")
    target = url(name, project, spammer.pk)
    expected = [(None, 401), (viewer, 403), (spammer, 403), (other_admin, 404)]
    for user, status in expected:
        assert api_client(user).post(target, {"reason": "no"}, format="json").status_code == status, user
    assert api_client(admin).get(target).status_code == 405
    assert state(project, spammer) == before
    assert ComparisonTask.objects.get(pk=first.pk).status == "complete"
    assert ComparisonTask.objects.get(pk=second.pk).active_assignments == 1


@pytest.mark.parametrize("name", ACTIONS)
def test_a_session_post_needs_the_csrf_token(world, name):
    from rest_framework.test import APIClient

    project, admin, _, spammer, (first, _) = world
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(admin)
    assert client.post(url(name, project, spammer.pk), {}, format="json").status_code == 403
    assert state(project, spammer) == (None, "") and ComparisonTask.objects.get(pk=first.pk).status == "complete"
