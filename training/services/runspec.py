"""The checks of a run request that need the database, after training.runspec parsed it: every id it
names belongs to the project (policy versions and reward backbones may be the installed shared base
models, project=None), mixed-in snapshots keep their oversight rule (snapshot_mix_check), and the
data filters are valid. run_request, pipeline_start, pipeline_advance, the A/B evaluation and the
scheduled round check all come through here, so no path skips a rule."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db.models import Q

from labeling.models import Project
from training import plan, runspec
from training.models import ModelVersion
from training.selectors.data import training_filters, training_snapshot_get
from training.selectors.runs import request_max_processes
from training.selectors.versions import model_version_list
from training.services.snapshots import snapshot_mix_check


@dataclass(frozen=True)
class CheckedRun:
    """A run request as it is stored: its params, and its base version (a policy run's parent, the
    version an evaluation evaluates or candidates sample from, a reward run's backbone)."""

    params: dict[str, Any]
    version: ModelVersion | None


def spec_invalid(exc: runspec.SpecError) -> ValidationError:
    """A SpecError as the ValidationError the APIs answer with a 400 of field errors."""
    return ValidationError(dict(exc.errors))


def spec_error_lines(exc: ValidationError) -> list[str]:
    """Each message of a ValidationError, after the field it is about."""
    if not hasattr(exc, "error_dict"):
        return list(exc.messages)
    return [m if field in ("__all__", "non_field_errors") else f"{field}: {m}"
            for field, messages in exc.message_dict.items() for m in messages]


def spec_error_text(exc: ValidationError) -> str:
    """A ValidationError as one line naming each field, for a page's message or a CommandError."""
    return "; ".join(spec_error_lines(exc))


def run_spec_check(*, project: Project, user: AbstractUser | None, kind: str, spec: Mapping[str, Any],
                   in_round: bool = False) -> CheckedRun:
    """Parse (training.runspec.run_spec) and scope-check a run request; ValidationError naming the field."""
    try:
        params = runspec.run_spec(kind, spec, max_processes=request_max_processes(), in_round=in_round)
    except runspec.SpecError as exc:
        raise spec_invalid(exc) from None
    version = None
    if "version" in params:
        version = model_version_list(project=project, kind=ModelVersion.Kind.POLICY).filter(pk=params.pop("version")).first()
        if version is None:
            raise ValidationError({"version": "No such policy version in this project."})
    elif kind == plan.EVALUATE and not in_round:
        raise ValidationError({"version": "An evaluation needs the version to evaluate."})
    if "base" in params:
        version = reward_base_find(base=params.pop("base"))
        if version is None:
            raise ValidationError({"base": f"No installed shared reward base {spec.get('base')!r} "
                                            "(manage.py install_base_models --reward-base installs one)."})
    if kind in plan.TRAINING_KINDS:  # refuse bad data options now, not when a worker picks the run up
        training_filters(params=params, project=project)
        if params.get("snapshot") and training_snapshot_get(project=project, snapshot_id=params["snapshot"]) is None:
            raise ValidationError({"snapshot": f"No training snapshot {params['snapshot']} in this project."})
        for snapshot_id in params.get("mix_snapshots", ()):
            snapshot_mix_check(project=project, snapshot_id=snapshot_id, user=user)
    return CheckedRun(params=params, version=version)


def reward_base_find(*, base: int | str) -> ModelVersion | None:
    """An installed shared reward backbone (install_base_models), by version id or by name."""
    shared = ModelVersion.objects.filter(project__isnull=True, kind=ModelVersion.Kind.REWARD, config__role="base",
                                         status=ModelVersion.Status.READY)
    found = Q(pk=base) if isinstance(base, int) else Q(name=base)
    return shared.filter(found).order_by("-created_at").first()


def round_spec_check(*, project: Project, user: AbstractUser | None, spec: Mapping[str, Any]) -> CheckedRun:
    """Scope-check every step of a parsed round spec (training.runspec.round_spec) before its first
    step is queued; returns that first step as it is stored."""
    first = None
    for kind in spec["steps"]:
        checked = round_step_check(project=project, user=user, spec=spec, kind=kind)
        first = first or checked
    return first


def round_step_check(*, project: Project, user: AbstractUser | None, spec: Mapping[str, Any], kind: str) -> CheckedRun:
    """A round's step params, parsed and scope-checked again where the step is queued: a spec stored
    on a run (or in a schedule) cannot bring anything a request could not."""
    try:
        step = plan.round_step_params(spec=dict(spec), kind=kind)
    except (TypeError, ValueError, AttributeError):
        raise ValidationError({"step_params": f"{kind}: an object of run options"}) from None
    try:
        return run_spec_check(project=project, user=user, kind=kind, spec=step, in_round=True)
    except ValidationError as exc:
        raise ValidationError({"step_params": [f"{kind}.{line}" for line in spec_error_lines(exc)]}) from None


def ab_spec_check(*, project: Project, spec: Mapping[str, Any]) -> tuple[ModelVersion, ModelVersion, int]:
    """A blind A/B request: two policy versions of the project (or shared bases), and its prompt count."""
    try:
        parsed = runspec.ab_spec(spec)
    except runspec.SpecError as exc:
        raise spec_invalid(exc) from None
    versions = model_version_list(project=project, kind=ModelVersion.Kind.POLICY)
    a = versions.filter(pk=parsed["version_a"]).first()
    b = versions.filter(pk=parsed["version_b"]).first()
    if a is None or b is None:
        raise ValidationError({"version": "Both must be policy versions of this project (or shared bases)."})
    return a, b, parsed["prompts"]
