"""The annotators tab's Exclude, Re-include and Re-queue forms (labeling.console.members): what an admin
sees and writes, and that nobody else can. The whole permission table is tests/test_permissions.py."""
from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from labeling.models import ComparisonTask, Judgment, Membership
from labeling.services.assignment import task_assign_next
from tests.labeling.judging import make_tasks, submit

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def tab(project_factory, member):
    """Overlap 1, three tasks: the spammer judged one (complete), holds a lease on the second, and has
    not seen the third."""
    project = project_factory(mode="pairwise", overlap=1)
    first, second, _ = make_tasks(project, 3)
    admin, viewer, spammer = member(project, "admin"), member(project, "viewer"), member(project, "annotator")
    got = task_assign_next(annotator=spammer, project=project)
    submit(got.assignment, spammer)
    return project, admin, viewer, spammer, (first, second)


def url(name: str, project) -> str:
    return reverse(name, args=[project.slug])


def excluded(project, user) -> bool:
    return Membership.objects.get(project=project, user=user).excluded_at is not None


def test_admin_excludes_with_a_reason_and_the_row_says_so(tab):
    project, admin, _, spammer, (_, second) = tab
    client = client_for(admin)
    page = client.get(url("console-annotators", project)).content.decode()
    assert f'action="{url("console-annotator-exclude", project)}"' in page and "Re-include" not in page

    response = client.post(url("console-annotator-exclude", project), {"user_id": spammer.pk, "reason": "<b>random</b>"},
                           follow=True)
    assert response.redirect_chain == [(url("console-annotators", project), 302)]
    page = response.content.decode()
    assert f"{spammer.username} is excluded" in page
    assert f"by <bdi>{admin.username}</bdi>: <bdi>&lt;b&gt;random&lt;/b&gt;</bdi>" in page  # escaped
    assert 'class="excluded"' in page and f'action="{url("console-annotator-include", project)}"' in page
    assert excluded(project, spammer)
    assert ComparisonTask.objects.get(pk=second.pk).active_assignments == 0  # the held lease went back


def test_admin_reincludes(tab):
    project, admin, _, spammer, _ = tab
    client = client_for(admin)
    client.post(url("console-annotator-exclude", project), {"user_id": spammer.pk})
    response = client.post(url("console-annotator-include", project), {"user_id": spammer.pk}, follow=True)
    assert f"{spammer.username} is re-included" in response.content.decode()
    assert not excluded(project, spammer)
    # The third task: the released lease's task is not served to them again, as after any lapsed lease.
    assert task_assign_next(annotator=spammer, project=project).assignment is not None


def test_admin_requeues_and_the_message_names_the_tasks_reopened(tab):
    project, admin, _, spammer, (first, _) = tab
    client = client_for(admin)
    response = client.post(url("console-annotator-requeue", project), {"user_id": spammer.pk}, follow=True)
    assert f"Re-queued {spammer.username}&#x27;s tasks: 1 task reopened" in response.content.decode()
    assert ComparisonTask.objects.get(pk=first.pk).status == "open"
    assert Judgment.objects.filter(annotator=spammer).count() == 1
    again = client.post(url("console-annotator-requeue", project), {"user_id": spammer.pk}, follow=True)
    assert "0 tasks reopened" in again.content.decode()


def test_bad_input_is_an_error_message_and_writes_nothing(tab, make_user):
    project, admin, _, spammer, (first, _) = tab
    client = client_for(admin)
    stranger = make_user()
    for name in ("console-annotator-exclude", "console-annotator-include", "console-annotator-requeue"):
        for data in ({"user_id": stranger.pk}, {"user_id": "x"}, {}):
            response = client.post(url(name, project), data, follow=True)
            assert "No such member in this project." in response.content.decode(), (name, data)
    response = client.post(url("console-annotator-exclude", project), {"user_id": spammer.pk, "reason": "x" * 2001},
                           follow=True)
    assert "at most 2000 characters" in response.content.decode()
    assert not excluded(project, spammer) and ComparisonTask.objects.get(pk=first.pk).status == "complete"


@pytest.mark.parametrize("name", ["console-annotator-exclude", "console-annotator-include", "console-annotator-requeue"])
def test_only_this_projects_admins_may(tab, project_factory, member, name):
    project, admin, viewer, spammer, (first, _) = tab
    if name == "console-annotator-include":
        Membership.objects.filter(project=project, user=spammer).update(excluded_at="2026-01-01T00:00:00Z")
    before = excluded(project, spammer)
    stranger = member(project_factory(), "admin")
    data = {"user_id": spammer.pk, "reason": "no"}
    assert client_for(viewer).post(url(name, project), data).status_code == 403
    assert client_for(spammer).post(url(name, project), data).status_code == 403
    assert client_for(stranger).post(url(name, project), data).status_code == 404
    assert client_for(admin).get(url(name, project)).status_code == 405
    anonymous = Client().post(url(name, project), data)
    assert anonymous.status_code == 302 and "login" in anonymous["Location"]
    assert excluded(project, spammer) == before
    assert ComparisonTask.objects.get(pk=first.pk).status == "complete"


@pytest.mark.parametrize("name", ["console-annotator-exclude", "console-annotator-include", "console-annotator-requeue"])
def test_the_forms_need_the_csrf_token(tab, name):
    project, admin, _, spammer, (first, _) = tab
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    assert client.post(url(name, project), {"user_id": spammer.pk}).status_code == 403
    assert not excluded(project, spammer) and ComparisonTask.objects.get(pk=first.pk).status == "complete"


def test_viewers_see_the_exclusion_but_no_forms(tab):
    project, admin, viewer, spammer, _ = tab
    client_for(admin).post(url("console-annotator-exclude", project), {"user_id": spammer.pk, "reason": "spam"})
    page = client_for(viewer).get(url("console-annotators", project)).content.decode()
    assert f"by <bdi>{admin.username}</bdi>: <bdi>spam</bdi>" in page
    for name in ("console-annotator-exclude", "console-annotator-include", "console-annotator-requeue"):
        assert url(name, project) not in page
