"""Policy training, evaluation, promotion, the chained training round (pipeline) and blind human A/B
evaluations. Every state change goes through the run machinery of training.services (run_start,
run_heartbeats, RunReporter, run_succeed, run_fail); this module adds what the policy steps need.

A round (pipeline) is a chain of runs sharing a pipeline_id:

    reward retrain -> policy retrain (sft | dpo | ppo) -> evaluation (+ optional auto-promotion)
    -> candidate generation from the promoted policy

Each step is its own single-flight run and task. When a step succeeds, run_succeed calls
pipeline_advance in the same transaction, which queues the next step (its task is sent on commit),
so a step that fails or is cancelled ends the round and a rolled-back success queues nothing.

Held-out data: a prompt is held out for evaluation when a hash of its external id falls under
EVAL_FRACTION; trainers never see held-out prompts (unless nothing else is left), evaluation uses
only them (unless none exists, which its metrics then say).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import random
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from labeling.models import Demonstration, Project, Prompt, TaskResponse
from training.models import ModelVersion, TrainingRun
from training.selectors import judgments_for_training, model_version_promoted_get, version_flag_rates
from training.services import (
    RunAlreadyActive, RunReporter, _jsonable, model_version_promote, run_execute, run_output_dir, run_params_update,
    run_queue, run_succeed,
)

logger = logging.getLogger(__name__)

POLICY_KINDS = (TrainingRun.Kind.SFT, TrainingRun.Kind.DPO, TrainingRun.Kind.PPO)
EVAL_FRACTION = 0.1
DEFAULT_PROMOTE_METRIC = "win_rate"
PROMOTE_METRICS = ("win_rate", "reward")
REWARD_HEAD_FILE = "reward_head.safetensors"  # training.ml.reward.HEAD_FILE, without importing torch here


# ------------------------------------------------------------------------------------------ data


def prompt_is_held_out(*, external_id: str, fraction: float = EVAL_FRACTION) -> bool:
    """Deterministic by the prompt's external id, so a prompt stays on its side as data grows."""
    digest = hashlib.sha256(f"pairwise-eval\x00{external_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _prompt_input(prompt: Prompt):
    return prompt.messages if prompt.messages else prompt.text


def _split(items: list, key: Callable[[Any], str], fraction: float) -> tuple[list, list]:
    """(train, held_out); when the train side would be empty, everything trains."""
    train, held = [], []
    for item in items:
        (held if prompt_is_held_out(external_id=key(item), fraction=fraction) else train).append(item)
    return (train or held), held


def sft_examples_collect(*, project: Project, include_chosen: bool = False, fraction: float = EVAL_FRACTION,
                         limit: int = 20000) -> list[dict[str, Any]]:
    """Demonstrations as {prompt, response}; with include_chosen also the single best response of each
    live judgment that is not marked both bad. Held-out prompts are left out."""
    demos = list(Demonstration.objects.filter(project=project).select_related("prompt").order_by("id")[:limit])
    examples = [(d.prompt, d.text) for d in demos]
    if include_chosen:
        from labeling.models import Response

        judgments = list(judgments_for_training(project=project).filter(both_bad=False)[:limit])
        best = {j.pk: j.ranking[0][0] for j in judgments if j.ranking and len(j.ranking) >= 2 and len(j.ranking[0]) == 1}
        texts = dict(Response.objects.filter(pk__in=set(best.values())).values_list("pk", "text"))
        examples += [(j.task.prompt, texts[best[j.pk]]) for j in judgments if j.pk in best and best[j.pk] in texts]
    train, _ = _split(examples, lambda e: e[0].external_id, fraction)
    return [{"prompt": _prompt_input(p), "response": text} for p, text in train]


def dpo_pairs_collect(*, project: Project, fraction: float = EVAL_FRACTION, limit: int = 50000) -> tuple[list[dict[str, Any]], int]:
    """({prompt, chosen, rejected} from the preference pairs of live judgments, the last judgment id used)."""
    from labeling.models import PreferencePair

    pairs = list(
        PreferencePair.objects.filter(project=project, judgment__superseded_by__isnull=True)
        .select_related("prompt", "chosen", "rejected").order_by("id")[:limit]
    )
    until = max((p.judgment_id for p in pairs), default=0)
    train, _ = _split(pairs, lambda p: p.prompt.external_id, fraction)
    return [{"prompt": _prompt_input(p.prompt), "chosen": p.chosen.text, "rejected": p.rejected.text} for p in train], until


def ppo_prompts_collect(*, project: Project, fraction: float = EVAL_FRACTION, limit: int = 20000) -> list:
    prompts = list(Prompt.objects.filter(project=project).order_by("id")[:limit])
    train, _ = _split(prompts, lambda p: p.external_id, fraction)
    return [_prompt_input(p) for p in train]


def held_out_collect(*, project: Project, max_prompts: int, max_demonstrations: int,
                     fraction: float = EVAL_FRACTION) -> tuple[list, list[dict[str, Any]], bool]:
    """(held-out prompts, held-out demonstrations, whether they really are held out)."""
    prompts = list(Prompt.objects.filter(project=project).order_by("id"))
    held = [p for p in prompts if prompt_is_held_out(external_id=p.external_id, fraction=fraction)]
    really = bool(held)
    held = held or prompts
    held_ids = {p.pk for p in held}
    demos = [d for d in Demonstration.objects.filter(project=project).select_related("prompt").order_by("id")
             if d.prompt_id in held_ids][:max_demonstrations]
    return [_prompt_input(p) for p in held[:max_prompts]], [{"prompt": _prompt_input(d.prompt), "response": d.text} for d in demos], really


# ---------------------------------------------------------------------------------- run plumbing


def _config(cls, params: dict[str, Any], **defaults: Any):
    known = {f.name for f in dataclasses.fields(cls)}
    overrides = {k: v for k, v in (params.get("config") or {}).items() if k in known}
    return cls(**{**defaults, **overrides})


def _system_prompt(project: Project) -> str:
    from training.ml.text import DEFAULT_SYSTEM_PROMPT

    return project.system_prompt or DEFAULT_SYSTEM_PROMPT


def _threads(params: dict[str, Any]) -> None:
    if params.get("threads"):
        import torch

        torch.set_num_threads(int(params["threads"]))


def policy_parent_get(*, run: TrainingRun) -> ModelVersion:
    parent = run.base_version or model_version_promoted_get(project=run.project, kind=ModelVersion.Kind.POLICY)
    if parent is None or parent.kind != ModelVersion.Kind.POLICY:
        raise ValueError("no promoted policy version (run manage.py install_base_models)")
    return parent


def trained_reward_get(*, project: Project) -> ModelVersion | None:
    """The promoted reward model, if it is a trained one (a bare backbone has no head to score with)."""
    rm = model_version_promoted_get(project=project, kind=ModelVersion.Kind.REWARD)
    if rm is None or not (Path(rm.artifact_path) / REWARD_HEAD_FILE).is_file():
        return None
    return rm


# ---------------------------------------------------------------------------------- policy train


def policy_train(*, run_id: int, worker: str = "", echo: Callable | None = None) -> ModelVersion | None:
    """The body of the `policy_train` task. The run's kind picks the trainer (sft, dpo, ppo); its
    params["config"] overrides the trainer's config; the parent is the run's base version, else the
    promoted policy. The new version (kind policy, parent = that version) is registered in the same
    transaction that marks the run succeeded; params["promote"] == "always" promotes it there too."""
    return run_execute(run_id=run_id, worker=worker, what="policy", body=lambda run: _policy_train(run, echo))


def _policy_train(run: TrainingRun, echo) -> ModelVersion | None:
    if run.kind not in POLICY_KINDS:
        raise ValueError(f"a {run.kind} run is not a policy run")
    params = run.params or {}
    _threads(params)
    project = run.project
    parent = policy_parent_get(run=run)
    output_dir = run_output_dir(run=run)
    reporter = RunReporter(run_id=run.pk, echo=echo)
    fraction = float(params.get("eval_fraction", EVAL_FRACTION))
    defaults = {"system_prompt": _system_prompt(project)}
    data_stats: dict[str, Any] = {}

    if run.kind == TrainingRun.Kind.SFT:
        from training.ml.sft import SFTConfig, train_sft

        examples = sft_examples_collect(project=project, include_chosen=bool(params.get("include_chosen")), fraction=fraction)
        if not examples:
            raise ValueError(f"no demonstrations{' or chosen responses' if params.get('include_chosen') else ''} in project {project.slug}")
        config = _config(SFTConfig, params, **defaults)
        data_stats = {"examples": len(examples), "include_chosen": bool(params.get("include_chosen"))}
        run_params_update(run_id=run.pk, output_dir=str(output_dir), parent_version=parent.pk, **data_stats)
        reporter.log(f"SFT on {len(examples)} examples from {parent.name}")
        metrics = train_sft(parent.artifact_path, examples, output_dir, config, progress=reporter)
    elif run.kind == TrainingRun.Kind.DPO:
        from training.ml.dpo import DPOConfig, train_dpo

        pairs, until = dpo_pairs_collect(project=project, fraction=fraction)
        if not pairs:
            raise ValueError(f"no preference pairs in project {project.slug}")
        config = _config(DPOConfig, params, **defaults)
        data_stats = {"pairs": len(pairs), "data_until_judgment_id": until}
        run_params_update(run_id=run.pk, output_dir=str(output_dir), parent_version=parent.pk, **data_stats)
        reporter.log(f"DPO on {len(pairs)} pairs, reference = parent {parent.name}, beta {config.beta}")
        metrics = train_dpo(parent.artifact_path, pairs, output_dir, config, progress=reporter)
    else:
        from training.ml.ppo import PPOConfig, train_ppo

        rm = trained_reward_get(project=project)
        if rm is None:
            raise ValueError("PPO needs a promoted, trained reward model")
        prompts = ppo_prompts_collect(project=project, fraction=fraction)
        if not prompts:
            raise ValueError(f"no prompts in project {project.slug}")
        config = _config(PPOConfig, params, **defaults)
        demos = sft_examples_collect(project=project, fraction=fraction) if config.ptx_coef > 0 else []
        data_stats = {"prompts": len(prompts), "ptx_demonstrations": len(demos), "reward_version": rm.pk}
        run_params_update(run_id=run.pk, output_dir=str(output_dir), parent_version=parent.pk, **data_stats)
        reporter.log(f"PPO on {len(prompts)} prompts against reward model {rm.name}, KL beta {config.beta} vs {parent.name}")
        metrics = train_ppo(parent.artifact_path, rm.artifact_path, prompts, output_dir, config, progress=reporter,
                            demonstrations=demos)
    reporter.flush()

    result = run_succeed(run_id=run.pk, promote=params.get("promote") == "always", version_fields={
        "project": project, "kind": ModelVersion.Kind.POLICY, "name": f"{project.slug}-{run.kind}-run{run.pk}",
        "base": parent.base or parent.artifact_path, "artifact_path": output_dir, "metrics": metrics,
        "config": {"trainer": run.kind, "values": dataclasses.asdict(config), **data_stats}, "parent": parent,
    })
    if result is None:
        shutil.rmtree(output_dir, ignore_errors=True)  # reaped or cancelled while finishing: no orphan folder
        return None
    return result[1]


# ------------------------------------------------------------------------------------ evaluation


def promotion_decide(*, evaluation: dict[str, Any], margin: float, metric: str = DEFAULT_PROMOTE_METRIC) -> tuple[bool, str]:
    """Does the new version beat its parent by `margin`?

    metric "win_rate": the RM-judged win rate against the parent is at least 0.5 + margin;
    metric "reward":   mean RM score minus the parent's is at least margin.
    """
    if metric not in PROMOTE_METRICS:
        raise ValidationError({"promote_metric": f"one of {', '.join(PROMOTE_METRICS)}"})
    if metric == "win_rate":
        value = evaluation.get("win_rate_vs_parent")
        if value is None:
            return False, "no reward-model win rate (no trained reward model)"
        ok = value >= 0.5 + margin
        return ok, f"win rate {value:.3f} {'>=' if ok else '<'} 0.5 + margin {margin:g}"
    mine, theirs = evaluation.get("reward_mean"), evaluation.get("parent_reward_mean")
    if mine is None or theirs is None:
        return False, "no reward-model scores (no trained reward model)"
    ok = mine - theirs >= margin
    return ok, f"reward gain {mine - theirs:.4f} {'>=' if ok else '<'} margin {margin:g}"


def model_version_metrics_update(*, version: ModelVersion, **metrics: Any) -> ModelVersion:
    with transaction.atomic():
        locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
        locked.metrics = {**(locked.metrics or {}), **_jsonable(metrics)}
        locked.save(update_fields=["metrics"])
    return locked


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
    _threads(params)
    version = run.base_version
    if version is None or version.kind != ModelVersion.Kind.POLICY:
        raise ValueError("an evaluation run needs a policy version as its base version")
    parent = version.parent
    rm = trained_reward_get(project=project)
    prompts, demos, held_out = held_out_collect(
        project=project, max_prompts=int(params.get("max_prompts", 32)),
        max_demonstrations=int(params.get("max_demonstrations", 32)), fraction=float(params.get("eval_fraction", EVAL_FRACTION)),
    )
    reporter = RunReporter(run_id=run.pk, echo=echo)
    reporter(0.05, {})
    reporter.log(f"evaluating {version.name} against {parent.name if parent else 'itself'} on {len(prompts)} prompts, "
                 f"{len(demos)} demonstrations (held out: {held_out}); reward model {rm.name if rm else 'none'}")
    reporter.flush()
    results = evaluate_policy(
        version.artifact_path, (parent or version).artifact_path, rm.artifact_path if rm else None, prompts, demos,
        max_new_tokens=int(params.get("max_new_tokens", min(project.gen_max_new_tokens, 64))),
        batch_size=int(params.get("batch_size", 8)), system_prompt=_system_prompt(project), seed=run.pk,
        device=params.get("device", "auto"), precision=params.get("precision", "fp32"),
    )
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
            ok, why = promotion_decide(evaluation=results, margin=float(margin),
                                       metric=params.get("promote_metric", DEFAULT_PROMOTE_METRIC))
            current = model_version_promoted_get(project=project, kind=ModelVersion.Kind.POLICY)
            if ok and parent is not None and current is not None and current.pk != parent.pk and current.pk != version.pk:
                ok, why = False, f"{why}, but the promoted policy is now {current.name}, not the parent"
            if ok:
                model_version_promote(version=version)
            decision.update(promoted=ok, reason=why)
        locked.params = {**(locked.params or {}), "promotion": decision,
                         "evaluation": {k: v for k, v in _jsonable(results).items() if k != "samples"}}
        locked.save(update_fields=["params"])

    if run_succeed(run_id=run.pk, version_fields=None, inside=write) is None:
        return None
    return {**results, "promotion": decision}


# -------------------------------------------------------------------------------------- pipeline


def pipeline_spec(*, policy_kind: str = "", auto_promote_margin: float | None = None,
                  promote_metric: str = DEFAULT_PROMOTE_METRIC, step_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The steps of a round and their settings. Defaults: settings.PAIRWISE_PIPELINE_POLICY_KIND (dpo) and
    settings.PAIRWISE_AUTO_PROMOTE_MARGIN (None: promotion stays manual)."""
    policy_kind = policy_kind or getattr(settings, "PAIRWISE_PIPELINE_POLICY_KIND", TrainingRun.Kind.DPO)
    if policy_kind not in POLICY_KINDS:
        raise ValidationError({"policy_kind": f"one of {', '.join(POLICY_KINDS)}"})
    if auto_promote_margin is None:
        auto_promote_margin = getattr(settings, "PAIRWISE_AUTO_PROMOTE_MARGIN", None)
    if promote_metric not in PROMOTE_METRICS:
        raise ValidationError({"promote_metric": f"one of {', '.join(PROMOTE_METRICS)}"})
    step_params = step_params or {}
    unknown = set(step_params) - {TrainingRun.Kind.REWARD, policy_kind, TrainingRun.Kind.EVALUATE, TrainingRun.Kind.CANDIDATES}
    if unknown or not all(isinstance(v, dict) for v in step_params.values()):
        raise ValidationError({"step_params": f"a dict of step kind -> params dict; unknown steps {sorted(unknown)}"})
    return {
        "steps": [TrainingRun.Kind.REWARD, policy_kind, TrainingRun.Kind.EVALUATE, TrainingRun.Kind.CANDIDATES],
        "auto_promote_margin": None if auto_promote_margin is None else float(auto_promote_margin),
        "promote_metric": promote_metric, "params": _jsonable(step_params),
    }


def run_pipeline_spec(*, run: TrainingRun) -> dict[str, Any] | None:
    """A pipeline run's spec: in its params, else (the scheduled first step keeps plain params) the defaults."""
    if run.pipeline_id is None:
        return None
    return (run.params or {}).get("pipeline") or pipeline_spec()


def _step_params(spec: dict[str, Any], kind: str) -> dict[str, Any]:
    params = dict((spec.get("params") or {}).get(kind) or {})
    if kind == TrainingRun.Kind.EVALUATE and spec.get("auto_promote_margin") is not None:
        params.setdefault("auto_promote_margin", spec["auto_promote_margin"])
        params.setdefault("promote_metric", spec.get("promote_metric", DEFAULT_PROMOTE_METRIC))
    return params


def pipeline_start(*, project: Project, spec: dict[str, Any] | None = None, trigger: str = "manual",
                   requested_by: AbstractUser | None = None, plain_params: bool = False) -> TrainingRun:
    """Queue a round's first step (reward retrain) under a new pipeline_id. RunAlreadyActive when a
    reward run is live. plain_params keeps the first run's params to {"trigger"} (default spec)."""
    spec = spec or pipeline_spec()
    params = {"trigger": trigger} if plain_params else {**_step_params(spec, TrainingRun.Kind.REWARD), "trigger": trigger, "pipeline": spec}
    return run_queue(project=project, kind=spec["steps"][0], params=params, requested_by=requested_by,
                     pipeline_id=uuid.uuid4())


def pipeline_advance(*, run: TrainingRun, version: ModelVersion | None) -> TrainingRun | None:
    """Called by run_succeed inside its transaction (the run row is locked): queue the round's next
    step with the same pipeline_id. Where the round cannot go on, the reason goes to the run's
    params["pipeline_stopped"] and nothing is queued."""
    spec = run_pipeline_spec(run=run)
    if spec is None or run.kind not in spec["steps"]:
        return None
    index = spec["steps"].index(run.kind)
    if index + 1 >= len(spec["steps"]):
        return None
    kind = spec["steps"][index + 1]
    base_version = None
    stopped = ""
    if kind in POLICY_KINDS and model_version_promoted_get(project=run.project, kind=ModelVersion.Kind.POLICY) is None:
        stopped = "no promoted policy to retrain (run manage.py install_base_models)"
    if kind == TrainingRun.Kind.EVALUATE:
        base_version = version
        if version is None or version.kind != ModelVersion.Kind.POLICY:
            stopped = "the policy step registered no version"
    nxt = None
    if not stopped:
        try:
            nxt = run_queue(project=run.project, kind=kind, base_version=base_version, pipeline_id=run.pipeline_id,
                            requested_by=run.requested_by,
                            params={**_step_params(spec, kind), "trigger": "pipeline", "pipeline": spec})
        except RunAlreadyActive as exc:
            stopped = f"a {kind} run ({exc.run.pk}) was already live"
        except ValidationError as exc:
            stopped = "; ".join(exc.messages)
    if stopped:
        logger.warning("pipeline %s stopped after run %s: %s", run.pipeline_id, run.pk, stopped)
        run.params = {**(run.params or {}), "pipeline_stopped": stopped}
        run.save(update_fields=["params"])
    return nxt


# ---------------------------------------------------------------------------- blind A/B evaluation

AB_INSTRUCTIONS = (
    "Blind comparison of two model versions. Which response is better? The sides are shuffled per task "
    "and the model names are hidden; judge the text only."
)


def ab_evaluation_create(
    *, project: Project, version_a: ModelVersion, version_b: ModelVersion, prompts: int = 20,
    created_by: AbstractUser | None = None, seed: int | None = None,
) -> TrainingRun:
    """One click: a pairwise project whose tasks show one response of each version per prompt, the
    sides randomised; the project's members get the same roles there. Its prompts are copied from
    the project, held-out ones first. Returns the candidates run that generates the responses (in the
    new project; its params["ab"] links back). Judgments there feed ab_leaderboard."""
    from labeling.services.imports import project_data_import
    from labeling.services.projects import membership_set, project_create

    for v in (version_a, version_b):
        if v.kind != ModelVersion.Kind.POLICY or v.status != ModelVersion.Status.READY:
            raise ValidationError("Both versions must be ready policy versions.")
        if v.project_id not in (None, project.pk):
            raise ValidationError(f"Version {v.pk} belongs to another project.")
    if version_a.pk == version_b.pk:
        raise ValidationError("Pick two different versions.")
    if not 1 <= prompts <= 1000:
        raise ValidationError({"prompts": "between 1 and 1000"})
    source = list(Prompt.objects.filter(project=project).order_by("id"))
    source.sort(key=lambda p: not prompt_is_held_out(external_id=p.external_id))
    source = source[:prompts]
    if not source:
        raise ValidationError("The project has no prompts.")
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    with transaction.atomic():
        base = f"{project.slug}-ab-{version_a.pk}-vs-{version_b.pk}"[:90]
        slug, n = base, 1
        while Project.objects.filter(slug=slug).exists():
            n += 1
            slug = f"{base}-{n}"
        ab = project_create(
            name=f"A/B · {project.name}: {version_a.pk} vs {version_b.pk}"[:200], slug=slug, created_by=created_by,
            mode=Project.Mode.PAIRWISE, instructions=AB_INSTRUCTIONS, overlap=project.overlap,
            likert_enabled=project.likert_enabled, flags_enabled=project.flags_enabled, custom_flags=project.custom_flags,
            system_prompt=project.system_prompt, gen_temperature=project.gen_temperature, gen_top_p=project.gen_top_p,
            gen_max_new_tokens=project.gen_max_new_tokens,
            retrain_min_judgments=2**31 - 1,  # an evaluation project never trains
        )
        for membership in project.memberships.select_related("user"):
            if created_by is None or membership.user_id != created_by.pk:
                membership_set(project=ab, user=membership.user, role=membership.role)
        lines = []
        for p in source:
            record = {"id": p.external_id, **({"messages": p.messages} if p.messages else {"prompt": p.text})}
            lines.append(json.dumps(record))
        project_data_import(project=ab, stream=io.BytesIO("\n".join(lines).encode()), filename="ab-prompts.jsonl")
        return run_queue(project=ab, kind=TrainingRun.Kind.CANDIDATES, requested_by=created_by, params={
            "trigger": "ab", "max_prompts": len(source),
            "ab": {"source_project_id": project.pk, "source_project": project.slug,
                   "versions": [version_a.pk, version_b.pk], "seed": seed},
        })


def ab_candidates_generate(*, run: TrainingRun, echo: Callable | None = None) -> dict[str, int] | None:
    """The A/B variant of candidate generation (run.params["ab"]): one sample from each of the two
    versions per prompt; a task per prompt whose two responses differ, at randomised positions."""
    from labeling.models import ComparisonTask, Response
    from training.ml.generate import generate_candidates

    project, params = run.project, run.params or {}
    ab = params["ab"]
    versions = list(ModelVersion.objects.filter(pk__in=ab["versions"]))
    versions.sort(key=lambda v: ab["versions"].index(v.pk))
    if len(versions) != 2:
        raise ValueError("a version of the A/B evaluation is gone")
    prompts = list(Prompt.objects.filter(project=project).exclude(tasks__isnull=False).order_by("id")[: int(params.get("max_prompts", 1000))])
    if not prompts:
        raise ValueError("no prompt without a task")
    generation = {"temperature": project.gen_temperature, "top_p": project.gen_top_p,
                  "max_new_tokens": project.gen_max_new_tokens, "system_prompt": _system_prompt(project)}
    samples = []
    for i, version in enumerate(versions):
        reporter = RunReporter(run_id=run.pk, span=(0.49 * i, 0.49 * (i + 1)), echo=echo)
        samples.append(generate_candidates(
            version.artifact_path, [_prompt_input(p) for p in prompts], k=1, temperature=project.gen_temperature,
            top_p=project.gen_top_p, max_new_tokens=project.gen_max_new_tokens, system_prompt=generation["system_prompt"],
            batch_size=int(params.get("batch_size", 16)), seed=int(ab.get("seed", 0)) + i, progress=reporter,
            device=params.get("device", "auto"),
        ))
        reporter.flush()
    rng = random.Random(ab.get("seed", 0))
    created = {"tasks": 0, "responses": 0, "prompts_skipped": 0}

    def write(locked: TrainingRun) -> None:
        for j, prompt in enumerate(prompts):
            texts = [s[j][0] if s[j] else "" for s in samples]
            if not all(t.strip() for t in texts) or texts[0].strip() == texts[1].strip():
                created["prompts_skipped"] += 1  # an empty or identical pair tells the labeler nothing
                continue
            rows = Response.objects.bulk_create([
                Response(prompt=prompt, text=t, source=v.name[:255], model_version=v,
                         generation={**generation, "model_version": v.pk, "seed": int(ab.get("seed", 0)) + i})
                for i, (v, t) in enumerate(zip(versions, texts))
            ])
            rng.shuffle(rows)  # sides randomised per task
            task = ComparisonTask.objects.create(project=project, prompt=prompt)
            TaskResponse.objects.bulk_create([TaskResponse(task=task, response=r, position=i) for i, r in enumerate(rows)])
            created["tasks"] += 1
            created["responses"] += 2
        locked.params = {**(locked.params or {}), "created": dict(created)}
        locked.save(update_fields=["params"])

    if run_succeed(run_id=run.pk, version_fields=None, inside=write) is None:
        return None
    return created
