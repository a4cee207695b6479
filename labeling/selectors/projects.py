from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db.models import QuerySet

from labeling.models import Demonstration, Judgment, Membership, Project, Prompt, Response, ComparisonTask


def project_list_for_user(*, user: AbstractUser) -> QuerySet[Project]:
    projects = Project.objects.filter(deleted_at__isnull=True)
    if user.is_superuser:
        return projects
    return projects.filter(memberships__user=user).distinct()


def project_role_get(*, project: Project, user: AbstractUser) -> str | None:
    """The user's role in the project; superusers act as admins everywhere."""
    if not user.is_authenticated:
        return None
    if user.is_superuser:
        return Membership.Role.ADMIN
    return Membership.objects.filter(project=project, user=user).values_list("role", flat=True).first()


def prompt_list(*, project: Project) -> QuerySet[Prompt]:
    return project.prompts.order_by("id")


def response_list(*, project: Project) -> QuerySet[Response]:
    return Response.objects.filter(prompt__project=project).order_by("id")


def task_list(*, project: Project) -> QuerySet[ComparisonTask]:
    return project.tasks.order_by("id").prefetch_related("slots")


def judgment_list(*, project: Project, user: AbstractUser, role: str) -> QuerySet[Judgment]:
    """Annotators see only their own judgments; viewers and admins see the project's."""
    judgments = project.judgments.order_by("id").prefetch_related("pairs")
    if role == Membership.Role.ANNOTATOR:
        judgments = judgments.filter(annotator=user)
    return judgments


def demonstration_list(*, project: Project, user: AbstractUser, role: str) -> QuerySet[Demonstration]:
    demonstrations = project.demonstrations.order_by("id")
    if role == Membership.Role.ANNOTATOR:
        demonstrations = demonstrations.filter(author=user)
    return demonstrations


def project_get_live(*, slug: str | None) -> Project | None:
    """The project with this slug unless it is soft-deleted."""
    return Project.objects.filter(slug=slug, deleted_at__isnull=True).first()
