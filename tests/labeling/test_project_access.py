"""The one project-access rule (labeling.selectors.projects.project_access_get): one query, and
hide=True answers 404 where the role may not even know the project exists."""
import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import Http404

from labeling.selectors.projects import WORK_ROLES, project_access_get

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("role", ["admin", "annotator", "viewer"])
def test_one_query_gives_the_project_and_the_role(project_factory, member, django_assert_num_queries, role):
    project = project_factory()
    user = member(project, role)
    with django_assert_num_queries(1):
        assert project_access_get(slug=project.slug, user=user) == (project, role)


def test_superusers_act_as_admins_without_a_membership(project_factory, make_user):
    project = project_factory()
    assert project_access_get(slug=project.slug, user=make_user(is_superuser=True)) == (project, "admin")


def test_a_role_outside_roles_is_forbidden_or_hidden(project_factory, member):
    project = project_factory()
    viewer = member(project, "viewer")
    with pytest.raises(PermissionDenied):
        project_access_get(slug=project.slug, user=viewer, roles=WORK_ROLES)
    with pytest.raises(Http404):
        project_access_get(slug=project.slug, user=viewer, roles=WORK_ROLES, hide=True)
    annotator = member(project, "annotator")
    assert project_access_get(slug=project.slug, user=annotator, roles=WORK_ROLES, hide=True)[1] == "annotator"


def test_strangers_anonymous_and_deleted_projects_are_not_found(project_factory, member, make_user):
    project = project_factory()
    for user in (make_user(), AnonymousUser()):
        with pytest.raises(Http404):
            project_access_get(slug=project.slug, user=user)
    admin = member(project, "admin")
    project.deleted_at = project.created_at
    project.save(update_fields=["deleted_at"])
    with pytest.raises(Http404):
        project_access_get(slug=project.slug, user=admin)
    with pytest.raises(Http404):
        project_access_get(slug=None, user=admin)
