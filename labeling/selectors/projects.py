from __future__ import annotations

from collections.abc import Collection

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import Http404

from labeling.models import Demonstration, Judgment, Membership, Project, Prompt, Response, ComparisonTask

# The roles that label in a project (the others oversee it).
WORK_ROLES = frozenset({Membership.Role.ADMIN, Membership.Role.ANNOTATOR})
# The roles that oversee a project without labeling in it: they may see who judged what, gold tasks
# and model sources (the labeling page hides them from annotators), and use its frozen data elsewhere.
OVERSIGHT_ROLES = frozenset({Membership.Role.ADMIN, Membership.Role.VIEWER})


def project_list_for_user(*, user: AbstractUser) -> QuerySet[Project]:
    projects = Project.objects.filter(deleted_at__isnull=True)
    if user.is_superuser:
        return projects
    return projects.filter(memberships__user=user).distinct()



def prompt_list(*, project: Project) -> QuerySet[Prompt]:
    return project.prompts.order_by("id")


def response_list(*, project: Project) -> QuerySet[Response]:
    return Response.objects.filter(prompt__project=project).order_by("id")


def task_list(*, project: Project) -> QuerySet[ComparisonTask]:
    return project.tasks.order_by("id").prefetch_related("slots")


def tasks_short_of_responses_count(*, project: Project, responses: int) -> int:
    """How many of the project's tasks show fewer than `responses` responses: after K is raised they
    keep their old number (nothing adds responses to an existing task)."""
    return project.tasks.annotate(shown=Count("slots")).filter(shown__lt=responses).count()


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


# The project and the caller's membership role in one round trip: this is on the annotator's hot
# path (every next-task call), where the SQL is written out because building it with the ORM cost
# more CPU than running it.
_PROJECT_WITH_ROLE_SQL = (
    "SELECT p.*, m.role AS member_role FROM labeling_project p"
    " LEFT JOIN labeling_membership m ON m.project_id = p.id AND m.user_id = %s"
    " WHERE p.slug = %s AND p.deleted_at IS NULL LIMIT 1"
)


def project_access_get(*, slug: str | None, user: AbstractUser, roles: Collection[str] | None = None,
                       denied: str = "", hide: bool = False) -> tuple[Project, str]:
    """The one project-access rule of every API, page and dashboard: (live project, the user's role),
    superusers acting as admins everywhere. One query.

    Http404 for a missing or deleted project and for non-members alike, so project names do not leak
    between tenants. When `roles` is given and the user's role is not in it: PermissionDenied (403),
    or Http404 with hide=True, for places a role outside `roles` should not know exist (the labeling
    page and API are for the roles that work in a project, and a viewer has no queue there).
    """
    project = None
    if user.is_authenticated and slug is not None:
        project = next(iter(Project.objects.raw(_PROJECT_WITH_ROLE_SQL, [user.pk, slug])), None)
    role = None if project is None else Membership.Role.ADMIN if user.is_superuser else project.member_role
    if role is None or (hide and roles is not None and role not in roles):
        raise Http404("No such project.")
    if roles is not None and role not in roles:
        raise PermissionDenied(denied or f"Your role '{role}' cannot do this in project '{project.slug}'.")
    return project, role


def judgment_get_for_worker(*, judgment_id: int, user: AbstractUser) -> Judgment:
    """A judgment in a live project where the user labels (Http404 otherwise, as for the labeling API,
    so judgments of other tenants do not leak); whose judgment it is, the correction service checks."""
    judgment = Judgment.objects.select_related("project").filter(pk=judgment_id).first()
    if judgment is None:
        raise Http404("No such judgment.")
    project_access_get(slug=judgment.project.slug, user=user, roles=WORK_ROLES, hide=True)
    return judgment
