"""Reads of a project's machine annotators (training.services.machine_annotators writes them)."""
from __future__ import annotations

from django.db.models import QuerySet

from labeling.models import Project
from training.models import MachineAnnotator


def machine_annotator_list(*, project: Project) -> QuerySet[MachineAnnotator]:
    return MachineAnnotator.objects.filter(project=project).select_related("version", "user").order_by("name")


def machine_annotator_get(*, project: Project, machine_id: int) -> MachineAnnotator | None:
    """The project's machine annotator with this id (None for another project's: the same as none)."""
    return machine_annotator_list(project=project).filter(pk=machine_id).first()
