"""The evaluation run's task body: a policy version against its parent on the held-out prompts
(training.ml.evaluate) and on the held-out human pairs (training.ml.preference_eval: no judge), plus
human flag rates; stored as the version's metrics["evaluation"], with auto-promotion when the run asks
for it (the decision is training.plan.promotion_decide)."""
from __future__ import annotations

from typing import Any, Callable

from django.conf import settings
from django.utils import timezone

from training import plan
from training.models import ModelVersion, TrainingRun
from training.dataset import held_out_pairs
from training.selectors.data import held_out_collect, system_prompt_of, training_dataset_collect, training_filters
from training.selectors.versions import (
    model_version_promoted_get, policy_root_get, trained_reward_get, version_flag_rates,
)
from training.services.endpoints import is_endpoint_version
from training.services.execution import RunReporter, run_execute, threads_set
from training.services.runs import run_succeed
from training.services.versions import model_version_card_write, model_version_metrics_update, model_version_promote


def policy_evaluate(*, run_id: int, worker: str = "", echo: Callable | None = None) -> dict[str, Any] | None:
    """The body of the `policy_evaluate` task: evaluate the run's base version against its parent on
    held-out prompts and demonstrations (training.ml.evaluate), add human flag rates, store them as
    the version's metrics["evaluation"], and, when params["auto_promote_margin"] is set, promote it
    if it beats its parent by that margin while the parent is still the promoted policy. Metrics,
    promotion and the run's success are one transaction."""
    return run_execute(run_id=run_id, worker=worker, what="evaluation", body=lambda run: _policy_evaluate(run, echo))


def _policy_evaluate(run: TrainingRun, echo) -> dict[str, Any] | None:
    from training.ml.evaluate import evaluate_policy

    params, project = run.params or {}, run.project
    threads_set()
    version = run.base_version
    if version is None or version.kind != ModelVersion.Kind.POLICY:
        raise ValueError("an evaluation run needs a policy version as its base version")
    if is_endpoint_version(version):  # no weights here: compare it with blind A/B evaluations instead
        raise ValueError(f"{version.name} is a model endpoint; evaluate it with a blind A/B evaluation")
    parent, base = version.parent, policy_root_get(version=version)
    rm = trained_reward_get(project=project)
    prompts, demos, held_out = held_out_collect(
        project=project, max_prompts=int(params.get("max_prompts", 32)),
        max_demonstrations=int(params.get("max_demonstrations", 32)),
    )
    reporter = RunReporter(run_id=run.pk, echo=echo)
    reporter(0.05, {})
    reporter.log(f"evaluating {version.name} against {parent.name if parent else 'itself'} on {len(prompts)} prompts, "
                 f"{len(demos)} demonstrations (held out: {held_out}); reward model {rm.name if rm else 'none'}")
    reporter.flush()
    results = evaluate_policy(
        version.artifact_path, (parent or version).artifact_path, rm.artifact_path if rm else None, prompts, demos,
        max_new_tokens=int(params.get("max_new_tokens", min(project.gen_max_new_tokens, 64))),
        batch_size=int(params.get("batch_size", 8)), system_prompt=system_prompt_of(project), seed=run.pk,
        device=settings.PAIRWISE_DEVICE, precision=params.get("precision", "fp32"),
        base_dir=base.artifact_path if base is not None and base not in (parent, version) else None,
    )
    results.update(_preferences(version, parent, project, params, reporter))
    flags = version_flag_rates(version_ids=[v.pk for v in (version, parent) if v is not None])
    results.update({
        "held_out": held_out, "reward_version": rm.pk if rm else None, "parent_version": parent.pk if parent else None,
        "run_id": run.pk, "evaluated_at": timezone.now().isoformat(),
        "human_flags": flags.get(version.pk), "parent_human_flags": flags.get(parent.pk) if parent else None,
    })
    reporter(0.95, {})
    reporter.flush()
    margin = params.get("auto_promote_margin")
    decision: dict[str, Any] = {"auto": margin is not None}

    def write(locked: TrainingRun) -> None:
        model_version_metrics_update(version=version, evaluation=results)
        if margin is not None:
            ok, why = plan.promotion_decide(evaluation=results, margin=float(margin),
                                            metric=params.get("promote_metric", plan.DEFAULT_PROMOTE_METRIC),
                                            requires_preference_gain=bool(params.get("promote_requires_preference_gain")))
            current = model_version_promoted_get(project=project, kind=ModelVersion.Kind.POLICY)
            if ok and parent is not None and current is not None and current.pk != parent.pk and current.pk != version.pk:
                ok, why = False, f"{why}, but the promoted policy is now {current.name}, not the parent"
            if ok:
                model_version_promote(version=version)
            decision.update(promoted=ok, reason=why)
        locked.params = {**(locked.params or {}), "promotion": decision,
                         "evaluation": {k: v for k, v in plan.jsonable(results).items() if k != "samples"}}
        locked.save(update_fields=["params"])

    if run_succeed(run_id=run.pk, version_fields=None, inside=write) is None:
        return None
    version.refresh_from_db()
    model_version_card_write(version=version)  # the card now carries the evaluation's metrics
    return {**results, "promotion": decision}


def _preferences(version: ModelVersion, parent: ModelVersion | None, project, params: dict[str, Any],
                 reporter: RunReporter) -> dict[str, Any]:
    """Preference accuracy on the held-out prompts' human pairs (the judgments no trainer saw, K-way
    rankings through their pairs), with DPO's implicit reward at the version's own beta (0.1, DPO's
    default, for other trainers: the accuracy does not depend on it, only the margin's scale)."""
    from training.ml.dpo import DPOConfig
    from training.ml.preference_eval import evaluate_preferences

    dataset = training_dataset_collect(project=project, filters=training_filters(params={}, project=project))
    pairs = held_out_pairs(dataset)[: int(params.get("max_pairs", 256))]
    if not pairs:
        return {"eval_pairs": 0}
    values = (version.config or {}).get("values") or {}
    beta = float(values.get("beta", DPOConfig.beta)) if (version.config or {}).get("trainer") == "dpo" else DPOConfig.beta
    reporter.log(f"preference accuracy on {len(pairs)} held-out human pairs (implicit reward beta {beta:g})")
    return evaluate_preferences(
        version.artifact_path, (parent or version).artifact_path, pairs, beta=beta,
        max_length=int(values.get("max_length", 512)), batch_size=int(params.get("batch_size", 8)),
        system_prompt=system_prompt_of(project), device=settings.PAIRWISE_DEVICE,
        precision=params.get("precision", "fp32"), seed=version.pk)
