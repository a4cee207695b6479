"""Reads about a project's annotators that other reads filter by: who an admin excluded
(labeling.services.annotators). The label models, training snapshots and exports leave their
judgments out; the judgments themselves stay stored."""
from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import connection
from django.db.models import QuerySet

from labeling.models import Membership, Project

# Written out in SQL: it runs on every next-task call (labeling.services.assignment.leasing), where
# the ORM's query building cost more than the indexed lookup on (project, user) it sends.
_EXCLUDED_SQL = ("SELECT 1 FROM labeling_membership WHERE project_id = %s AND user_id = %s"
                 " AND excluded_at IS NOT NULL LIMIT 1")


def excluded_annotators(*, project: Project) -> QuerySet:
    """The user ids of the project's members that an admin excluded (and has not re-included), as a
    query: a subquery in the exports' filters, or read as a set (excluded_annotator_ids)."""
    return Membership.objects.filter(project=project, excluded_at__isnull=False).values_list("user_id", flat=True)


def excluded_annotator_ids(*, project: Project) -> set[int]:
    return set(excluded_annotators(project=project))


def member_user_get(*, project: Project, user_id: int) -> AbstractUser | None:
    """The user with this id if they are a member of the project (active or not), else None."""
    membership = Membership.objects.select_related("user").filter(project=project, user_id=user_id).first()
    return membership.user if membership else None


def annotator_is_excluded(*, project: Project, user: AbstractUser) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(_EXCLUDED_SQL, [project.pk, user.pk])
        return cursor.fetchone() is not None
