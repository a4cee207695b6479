"""Frozen training datasets: freeze the project's data into a snapshot file (training.dataset), and
give a training run the snapshot it trains from, a new one made at its start by default, or the
one its params name. The run points at it, and so does the version it registers."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import Http404
from django.utils import timezone

from labeling.models import DatasetSnapshot, Project
from labeling.selectors.exports import ExportFilters
from labeling.selectors.projects import OVERSIGHT_ROLES, project_access_get
from labeling.services.exports import dataset_snapshot_freeze, file_sha256
from training.dataset import FORMAT, TrainingDataset, agreement, dataset_read, dataset_write
from training.models import TrainingRun
from training.selectors.data import training_dataset_collect, training_filters, training_snapshot_find, training_snapshot_get


def training_snapshot_create(
    *, project: Project, filters: ExportFilters | None = None, user: AbstractUser | None = None,
) -> DatasetSnapshot:
    """Freeze what a training run would read now: the file (written atomically) and its snapshot row
    with sha256, row count and filters, plus the manifest beside the file."""
    filters = filters or training_filters(params={}, project=project)
    dataset = training_dataset_collect(project=project, filters=filters)
    stem = f"training-{timezone.now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    path = Path(settings.PAIRWISE_EXPORTS_DIR) / project.slug / f"{stem}.jsonl"
    rows, _ = dataset_write(path, dataset)
    return dataset_snapshot_freeze(project=project, fmt=FORMAT, filters=filters, path=path, rows=rows, user=user)


def run_snapshot_use(*, run: TrainingRun) -> tuple[DatasetSnapshot, TrainingDataset]:
    """The snapshot a training run trains from (params["snapshot"], else a new one from the live data
    with params["filters"]), recorded on the run, and its records, checked against its sha256."""
    params = run.params or {}
    if params.get("snapshot"):
        snapshot = training_snapshot_get(project=run.project, snapshot_id=int(params["snapshot"]))
        if snapshot is None:
            raise ValueError(f"no training snapshot {params['snapshot']} in project {run.project.slug}")
    else:
        filters = training_filters(params=params, project=run.project)
        snapshot = training_snapshot_create(project=run.project, filters=filters, user=run.requested_by)
    dataset = snapshot_read(snapshot=snapshot)
    with transaction.atomic():
        TrainingRun.objects.filter(pk=run.pk).update(snapshot=snapshot)
    run.snapshot = snapshot
    return snapshot, dataset


def snapshot_read(*, snapshot: DatasetSnapshot) -> TrainingDataset:
    """A frozen training dataset's records, checked against the sha256 it was frozen with."""
    if not Path(snapshot.path).is_file() or file_sha256(Path(snapshot.path)) != snapshot.sha256:
        raise ValueError(f"the file of snapshot {snapshot.pk} is missing or changed since it was frozen ({snapshot.path})")
    return dataset_read(snapshot.path)


def snapshot_mix_check(*, project: Project, snapshot_id: int, user: AbstractUser | None) -> DatasetSnapshot:
    """A snapshot a reward run of `project` may mix in: another live project's frozen training data
    that the requester oversees (admin or viewer there; a command, with no user, may use any). The
    same refusal whether it does not exist or is not theirs, so ids do not tell what exists."""
    snapshot = training_snapshot_find(snapshot_id=snapshot_id)
    if snapshot is not None and snapshot.project_id == project.pk:
        raise ValidationError({"mix_snapshots": f"Snapshot {snapshot_id} is this project's own data; it trains on that already."})
    if snapshot is not None and user is not None:
        try:
            project_access_get(slug=snapshot.project.slug, user=user, roles=OVERSIGHT_ROLES)
        except (Http404, PermissionDenied):
            snapshot = None
    if snapshot is None:
        raise ValidationError({"mix_snapshots": f"No training snapshot {snapshot_id} of a project you oversee."})
    return snapshot


def snapshot_facts(*, snapshot: DatasetSnapshot, dataset: TrainingDataset) -> dict[str, Any]:
    """What a version's metrics say about its data: which snapshot, its hash, rows, counts (with
    "sources": how many human and machine judgments, the card's Sources line) and filters."""
    filters = {k: v for k, v in (snapshot.filters or {}).items() if v not in (None, "", [], ())}
    if filters.get("label_model", "none") == "none":  # the default says nothing: older snapshots lack both keys
        filters.pop("label_model", None)
        filters.pop("label_targets", None)
    if filters.get("judgment_sources", "human") == "human":  # the default, as label_model's
        filters.pop("judgment_sources", None)
    return {"snapshot": snapshot.pk, "sha256": snapshot.sha256, "rows": snapshot.rows, **dataset.counts(),
            "agreement": agreement(dataset), "filters": filters,
            **({"label_model": dataset.label_model} if dataset.label_model else {})}
