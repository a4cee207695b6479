from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from labeling.models import ComparisonTask, Membership, Project

EDITABLE_FIELDS = {
    "name", "instructions", "mode", "responses_per_task", "overlap", "likert_enabled", "flags_enabled",
    "custom_flags", "lease_seconds", "gold_rate", "system_prompt", "gen_temperature", "gen_top_p",
    "gen_max_new_tokens", "retrain_min_judgments", "training_min_gold_accuracy", "retrain_paused",
    "reward_promote_min_heldout_groups", "queue_order", "suggestions_enabled",
}


# Slugs the console's URLs use for pages of their own (/projects/new/, /projects/markdown-preview/).
RESERVED_SLUGS = frozenset({"new", "markdown-preview"})


def _validated(project: Project) -> Project:
    if project.slug in RESERVED_SLUGS:
        raise ValidationError({"slug": f"'{project.slug}' is reserved for the console's own pages"})
    if project.mode == Project.Mode.PAIRWISE:
        project.responses_per_task = 2
    project.full_clean()
    return project


@transaction.atomic
def project_create(*, name: str, slug: str, created_by: AbstractUser | None = None, **fields: Any) -> Project:
    unknown = set(fields) - EDITABLE_FIELDS
    if unknown:
        raise ValidationError({key: "unknown field" for key in unknown})
    project = _validated(Project(name=name, slug=slug, created_by=created_by, **fields))
    project.save()
    if created_by is not None:
        Membership.objects.create(project=project, user=created_by, role=Membership.Role.ADMIN)
    _created_hooks_run(project=project)
    return project


def _created_hooks_run(*, project: Project) -> None:
    """What other apps set up for every new project (settings.PAIRWISE_PROJECT_CREATED_HOOKS: the training
    app's retraining schedule), in this transaction, so a project never exists without it. Named in
    settings rather than imported: labeling does not depend on the apps built on it."""
    for path in getattr(settings, "PAIRWISE_PROJECT_CREATED_HOOKS", ()):
        import_string(path)(project=project)


@transaction.atomic
def project_update(*, project: Project, **fields: Any) -> Project:
    unknown = set(fields) - EDITABLE_FIELDS
    if unknown:
        raise ValidationError({key: "unknown field" for key in unknown})
    old_overlap = project.overlap
    for key, value in fields.items():
        setattr(project, key, value)
    _validated(project).save()
    if project.overlap != old_overlap:
        _task_statuses_refresh(project=project)
    return project


def _task_statuses_refresh(*, project: Project) -> None:
    """After an overlap change, tasks short of the new overlap reopen and tasks at it close.
    Gold tasks stay open: every annotator is checked against them."""
    tasks = ComparisonTask.objects.filter(project=project, is_gold=False)
    tasks.filter(status=ComparisonTask.Status.COMPLETE, judgments_count__lt=project.overlap).update(
        status=ComparisonTask.Status.OPEN)
    tasks.filter(status=ComparisonTask.Status.OPEN, judgments_count__gte=project.overlap).update(
        status=ComparisonTask.Status.COMPLETE)


def project_soft_delete(*, project: Project) -> Project:
    project.deleted_at = timezone.now()
    project.save(update_fields=["deleted_at"])
    return project


def project_restore(*, project: Project) -> Project:
    project.deleted_at = None
    project.save(update_fields=["deleted_at"])
    return project


def membership_set(*, project: Project, user: AbstractUser, role: str) -> Membership:
    if role not in Membership.Role.values:
        raise ValidationError({"role": f"must be one of {Membership.Role.values}"})
    membership, _ = Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
    return membership


def membership_remove(*, project: Project, user: AbstractUser) -> None:
    Membership.objects.filter(project=project, user=user).delete()
