"""What the training commands parse the same way: a project slug and a JSON-object option."""
from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError

from labeling.models import Project
from labeling.selectors.projects import project_get_live


def project_from_slug(slug: str) -> Project:
    """The live project of that slug, or a CommandError naming it."""
    project = project_get_live(slug=slug)
    if project is None:
        raise CommandError(f"no project with slug {slug!r}")
    return project


def json_object(text: str, option: str) -> dict[str, Any]:
    """An option's JSON object ({} when empty), or a CommandError naming the option."""
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise CommandError(f"{option} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CommandError(f"{option} must be a JSON object")
    return value
