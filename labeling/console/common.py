"""What every console page shares: who may see it, and the tab bar's context."""
from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from labeling.models import Membership, Project
from labeling.selectors.projects import OVERSIGHT_ROLES, WORK_ROLES, project_access_get

ADMIN = frozenset({Membership.Role.ADMIN})
OVERSIGHT = OVERSIGHT_ROLES


def project_for(request: HttpRequest, slug: str, roles=OVERSIGHT) -> tuple[Project, str]:
    return project_access_get(slug=slug, user=request.user, roles=roles,
                              denied="Only project admins (and viewers, to read) use the project console.")


def tabs_context(*, project: Project, role: str, tab: str) -> dict[str, Any]:
    """The template context of console/_tabs.html (quality and training pages add it too)."""
    return {"project": project, "role": role, "tab": tab, "is_admin": role == Membership.Role.ADMIN,
            "oversees": role in OVERSIGHT, "can_label": role in WORK_ROLES}


def form_status(form) -> int:
    """A form sent back with errors answers 400, as the API does, so scripts and tests can tell."""
    return 400 if form.is_bound and form.errors else 200
