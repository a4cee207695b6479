"""Reads of a project's machine annotators (training.services.machine_annotators writes them)."""
from __future__ import annotations

from django.db.models import Count, Q, QuerySet

from labeling.models import Project
from training.models import MachineAnnotator, ModelVersion
from training.selectors.versions import model_version_list


def machine_annotator_list(*, project: Project) -> QuerySet[MachineAnnotator]:
    return MachineAnnotator.objects.filter(project=project).select_related("version", "user").order_by("name")


def machine_annotator_get(*, project: Project, machine_id: int) -> MachineAnnotator | None:
    """The project's machine annotator with this id (None for another project's: the same as none)."""
    return machine_annotator_list(project=project).filter(pk=machine_id).first()


def machine_annotator_rows(*, project: Project) -> QuerySet[MachineAnnotator]:
    """The console's table: each machine annotator with `judgments`, the judgments its bot made here
    (corrections included: a machine makes none)."""
    return machine_annotator_list(project=project).annotate(
        judgments=Count("user__judgments", filter=Q(user__judgments__project=project)))


def machine_annotator_versions(*, project: Project) -> dict[str, list[ModelVersion]]:
    """What a machine annotator of the project may judge with, the one rule the service checks and the
    console offers: "endpoint", the ready OpenAI-compatible endpoint versions the project may use (its
    own or shared ones; training.services.endpoints registers them with an "endpoint" config), and
    "reward", the ready reward versions of its own (a shared reward backbone has no trained head)."""
    ready = Q(status=ModelVersion.Status.READY)
    endpoint = Q(config__has_key="endpoint")
    return {
        "endpoint": list(model_version_list(project=project).filter(ready & endpoint)),
        "reward": list(model_version_list(project=project, kind=ModelVersion.Kind.REWARD, include_base=False)
                       .filter(ready).exclude(endpoint)),
    }
