"""The demo world for `make demo`: an admin, two annotators and a project we wrote ourselves."""
from __future__ import annotations

import secrets
from pathlib import Path

from django.contrib.auth import get_user_model
from django.db import transaction

from labeling.models import Membership, Project
from labeling.services.imports import project_data_import
from labeling.services.projects import membership_set, project_create

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"
DEMO_INSTRUCTIONS = """\
Rate each response from 1 (terrible) to 7 (excellent), tick any flags that apply, then rank the
responses from best to worst. Ties are fine when two responses are equally good.

Prefer responses that are **helpful**, **truthful** and **harmless**, in that order of checking.
"""


def _user_with_fresh_password(username: str, *, superuser: bool = False) -> tuple[object, str]:
    password = secrets.token_urlsafe(12)
    user, _ = get_user_model().objects.get_or_create(username=username)
    user.is_staff = user.is_superuser = superuser
    user.set_password(password)
    user.save()
    return user, password


@transaction.atomic
def demo_seed() -> dict[str, str]:
    """Create or refresh the demo users (new passwords each time) and load the demo project once."""
    admin, admin_pw = _user_with_fresh_password("admin", superuser=True)
    credentials = {"admin": admin_pw}
    project = Project.objects.filter(slug="demo").first() or project_create(
        name="Demo: helpful answers", slug="demo", created_by=admin, mode=Project.Mode.RANK,
        responses_per_task=4, overlap=2, instructions=DEMO_INSTRUCTIONS,
        system_prompt="You are a helpful, honest and harmless assistant.",
    )
    for name in ("annotator1", "annotator2"):
        user, password = _user_with_fresh_password(name)
        membership_set(project=project, user=user, role=Membership.Role.ANNOTATOR)
        credentials[name] = password
    for filename in ("demo_project.jsonl", "demo_demonstrations.jsonl"):
        with (DEMO_DIR / filename).open("rb") as stream:
            project_data_import(project=project, stream=stream, filename=filename, user=admin, source="demo")
    return credentials
