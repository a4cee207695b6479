"""Blind human A/B evaluations: one click makes a pairwise project whose tasks show one response of
each of two versions per prompt, sides randomised, and its generation run. Judgments there feed the
leaderboard (training.selectors.ab.ab_leaderboard)."""
from __future__ import annotations

import io
import json
import random
from typing import Callable

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import transaction

from labeling.models import Project
from labeling.services.imports import project_data_import
from labeling.services.projects import membership_set, project_create
from labeling.services.tasks import NewResponse, NewTask, tasks_create
from training.models import ModelVersion, TrainingRun
from training.selectors.data import ab_source_prompts, prompt_input, prompts_without_tasks, system_prompt_of
from training.services.endpoints import endpoint_config_of, endpoint_samples, is_endpoint_version
from training.services.execution import RunReporter
from training.services.runs import run_queue, run_succeed


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
    for v in (version_a, version_b):
        if v.kind != ModelVersion.Kind.POLICY or v.status != ModelVersion.Status.READY:
            raise ValidationError("Both versions must be ready policy versions.")
        if v.project_id not in (None, project.pk):
            raise ValidationError(f"Version {v.pk} belongs to another project.")
    if version_a.pk == version_b.pk:
        raise ValidationError("Pick two different versions.")
    if not 1 <= prompts <= 1000:
        raise ValidationError({"prompts": "between 1 and 1000"})
    source = ab_source_prompts(project=project, limit=prompts)
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
    from training.ml.generate import generate_candidates

    project, params = run.project, run.params or {}
    ab = params["ab"]
    versions = list(ModelVersion.objects.filter(pk__in=ab["versions"]))
    versions.sort(key=lambda v: ab["versions"].index(v.pk))
    if len(versions) != 2:
        raise ValueError("a version of the A/B evaluation is gone")
    prompts = prompts_without_tasks(project=project, limit=int(params.get("max_prompts", 1000)))
    if not prompts:
        raise ValueError("no prompt without a task")
    generation = {"temperature": project.gen_temperature, "top_p": project.gen_top_p,
                  "max_new_tokens": project.gen_max_new_tokens, "system_prompt": system_prompt_of(project)}
    samples, per_version = [], []
    for i, version in enumerate(versions):
        per_version.append({**generation, "model_version": version.pk, "seed": int(ab.get("seed", 0)) + i})
        reporter = RunReporter(run_id=run.pk, span=(0.49 * i, 0.49 * (i + 1)), echo=echo)
        if is_endpoint_version(version):  # a model server (training.services.endpoints)
            endpoint = endpoint_config_of(version=version, temperature=project.gen_temperature,
                                          top_p=project.gen_top_p, max_tokens=project.gen_max_new_tokens)
            per_version[i].update(temperature=endpoint.temperature, top_p=endpoint.top_p, max_new_tokens=endpoint.max_tokens,
                                  endpoint={"base_url": endpoint.base_url, "model": endpoint.model})
            samples.append(endpoint_samples(endpoint, prompts, k=1, system_prompt=generation["system_prompt"],
                                            seed=int(ab.get("seed", 0)) + i, progress=reporter))
        else:
            samples.append(generate_candidates(
                version.artifact_path, [prompt_input(p) for p in prompts], k=1, temperature=project.gen_temperature,
                top_p=project.gen_top_p, max_new_tokens=project.gen_max_new_tokens, system_prompt=generation["system_prompt"],
                batch_size=int(params.get("batch_size", 16)), seed=int(ab.get("seed", 0)) + i, progress=reporter,
                device=settings.PAIRWISE_DEVICE,
            ))
        reporter.flush()
    rng = random.Random(ab.get("seed", 0))
    created = {"tasks": 0, "responses": 0, "prompts_skipped": 0}

    def write(locked: TrainingRun) -> None:
        specs = []
        for j, prompt in enumerate(prompts):
            texts = [s[j][0] if s[j] else "" for s in samples]
            if not all(t.strip() for t in texts) or texts[0].strip() == texts[1].strip():
                created["prompts_skipped"] += 1  # an empty or identical pair tells the labeler nothing
                continue
            sides = [
                NewResponse(text=t, source=v.name, model_version_id=v.pk, generation=per_version[i])
                for i, (v, t) in enumerate(zip(versions, texts))
            ]
            rng.shuffle(sides)  # sides randomised per task
            specs.append(NewTask(prompt=prompt, responses=sides))
        made = tasks_create(project=project, tasks=specs)
        created["tasks"], created["responses"] = len(made), 2 * len(made)
        locked.params = {**(locked.params or {}), "created": dict(created)}
        locked.save(update_fields=["params"])

    if run_succeed(run_id=run.pk, version_fields=None, inside=write) is None:
        return None
    return created
