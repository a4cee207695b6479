"""The model registry: register a finished artifact folder as a version, promote (one promoted
version per project and kind, enforced by the database), demote, add metrics, and install the
shared base models."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from labeling.models import Project
from training.plan import jsonable
from training.models import ModelVersion
from training.selectors.versions import (
    base_policy_promoted_exists, base_version_get, model_card_facts, version_is_adapter,
)


def model_version_register(
    *, project: Project | None, kind: str, name: str, base: str, artifact_path: str | os.PathLike,
    config: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None, parent: ModelVersion | None = None,
    snapshot: Any = None, promoted: bool = False,
) -> ModelVersion:
    """Register a complete artifact folder. The folder must already be in place (atomic move done)."""
    path = Path(artifact_path)
    if not path.is_dir() or path.name.startswith(".tmp-"):
        raise ValidationError({"artifact_path": f"{path} is not a finished artifact folder."})
    if kind not in ModelVersion.Kind.values:
        raise ValidationError({"kind": f"Unknown kind {kind!r}."})
    with transaction.atomic():
        version = ModelVersion.objects.create(
            project=project, kind=kind, name=name[:200], base=str(base)[:1024], artifact_path=str(path.resolve()),
            config=jsonable(config or {}), metrics=jsonable(metrics or {}), parent=parent, snapshot=snapshot,
        )
        if promoted:
            version = model_version_promote(version=version)
    return version


def model_version_promote(*, version: ModelVersion) -> ModelVersion:
    """Make this the promoted version of its kind in its project; the previous one is demoted."""
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if version.status != ModelVersion.Status.READY:
            raise ValidationError("Only a ready version can be promoted.")
        if version.promoted:
            return version
        current = ModelVersion.objects.select_for_update().filter(
            project=version.project, kind=version.kind, promoted=True
        ).exclude(pk=version.pk)
        current.update(promoted=False)
        version.promoted = True
        version.save(update_fields=["promoted"])
    return version


def model_version_demote(*, version: ModelVersion) -> ModelVersion:
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if version.promoted:
            version.promoted = False
            version.save(update_fields=["promoted"])
    return version


def model_version_card_write(*, version: ModelVersion) -> Path | None:
    """(Re)write README.md, the model card, into a project version's folder from the registry's facts.
    Shared base models are installed folders (site-packages, a user's checkout): never written into."""
    from training.ml.card import write_model_card

    folder = Path(version.artifact_path)
    if version.project_id is None or not folder.is_dir():
        return None
    return write_model_card(folder, model_card_facts(version=version))


def model_version_metrics_update(*, version: ModelVersion, **metrics: Any) -> ModelVersion:
    with transaction.atomic():
        locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
        locked.metrics = {**(locked.metrics or {}), **jsonable(metrics)}
        locked.save(update_fields=["metrics"])
    return locked


def model_version_evaluation_record(
    *, version: ModelVersion, name: str, result: dict[str, Any], source: str = "", records_sha256: str = "",
) -> ModelVersion:
    """Store one evaluation on other data as metrics["evaluations"][name] (without per-pair margins;
    the same name again replaces it, other names are kept) and rewrite the model card to show it."""
    kept = {k: v for k, v in result.items() if k != "margins"}
    with transaction.atomic():
        locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
        evaluations = dict((locked.metrics or {}).get("evaluations") or {})
        evaluations[name] = jsonable({**kept, "source": source, "records_sha256": records_sha256,
                                      "evaluated_at": timezone.now().isoformat()})
        locked.metrics = {**(locked.metrics or {}), "evaluations": evaluations}
        locked.save(update_fields=["metrics"])
    model_version_card_write(version=locked)
    return locked


def base_models_install(*, policy_dir: str | os.PathLike | None = None, reward_base_dir: str | os.PathLike | None = None) -> dict[str, ModelVersion]:
    """Idempotent: the first promoted policy (SmolLM2-135M-Instruct converted from the GGUF into
    PAIRWISE_MODELS_DIR, or any local HF causal-LM folder) and the reward base (MiniLM), as shared
    (project-less) versions. Re-running registers nothing twice and keeps a promotion made since."""
    from training.ml.reward.config import MINILM_HUB_ID, default_reward_base

    # The Hub id of a bundled model is recorded (config["model_id"]): model cards name it as base_model.
    policy_id = reward_id = None
    if policy_dir is None:
        from training.ml.convert import SMOLLM2_HUB_ID, ensure_smollm2

        policy_dir, policy_id = ensure_smollm2(Path(settings.PAIRWISE_MODELS_DIR) / "smollm2-135m-instruct"), SMOLLM2_HUB_ID
    if reward_base_dir is None:
        reward_id = MINILM_HUB_ID
    policy_dir = Path(policy_dir).resolve()
    reward_dir = Path(reward_base_dir or default_reward_base()).resolve()
    installed = {}
    with transaction.atomic():
        for kind, path, role, model_id in ((ModelVersion.Kind.POLICY, policy_dir, "policy-base", policy_id),
                                           (ModelVersion.Kind.REWARD, reward_dir, "base", reward_id)):
            version = base_version_get(kind=kind, artifact_path=str(path))
            config = {"role": role} | ({"model_id": model_id} if model_id else {})
            if version is None:
                version = model_version_register(project=None, kind=kind, name=path.name, base=str(path),
                                                 artifact_path=path, config=config)
            elif model_id and (version.config or {}).get("model_id") != model_id:  # installed before ids were kept
                version.config = {**(version.config or {}), "model_id": model_id}
                version.save(update_fields=["config"])
            installed[kind] = version
        policy = installed[ModelVersion.Kind.POLICY]
        if not base_policy_promoted_exists():
            installed[ModelVersion.Kind.POLICY] = model_version_promote(version=policy)
    return installed


def model_version_merge(*, version: ModelVersion) -> ModelVersion:
    """Merge a LoRA policy version into full weights: a new plain version beside it (same parent,
    config and metrics, `merged_from` in its metrics), not promoted. The adapter version stays as it
    is. Runs in the request: merging is one load and one save (seconds at 135M, minutes at 8B)."""
    from training.ml.checkpoint import adapter_merge

    if version.kind != ModelVersion.Kind.POLICY or not version_is_adapter(version=version):
        raise ValidationError({"version": f"{version.name} is not a LoRA adapter policy version; nothing to merge."})
    folder = Path(version.artifact_path).with_name(f"{Path(version.artifact_path).name}-merged")
    if folder.exists():
        raise ValidationError({"version": f"{version.name} was merged already ({folder.name})."})
    adapter_merge(version.artifact_path, folder)
    merged = model_version_register(
        project=version.project, kind=version.kind, name=f"{version.name}-merged", base=version.base,
        artifact_path=folder, config=version.config,
        metrics={**(version.metrics or {}), "merged_from": version.pk}, parent=version.parent, snapshot=version.snapshot,
    )
    model_version_card_write(version=merged)
    return merged
