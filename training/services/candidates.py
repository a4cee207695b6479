"""Candidate generation's run task body: the promoted policy samples K responses per prompt that
has no open task, and the comparison tasks are created (labeling.services.tasks.tasks_create)
together with the run's success, so a failed or reaped run creates no tasks. A run with
params["ab"] is a blind A/B evaluation's generation (training.services.ab)."""
from __future__ import annotations

from typing import Any, Callable

from django.conf import settings

from labeling.models import Project, Prompt
from labeling.services.tasks import NewResponse, NewTask, tasks_create
from training.models import ModelVersion, TrainingRun
from training.selectors.data import candidate_prompts_select, prompt_input, system_prompt_of
from training.selectors.versions import model_version_promoted_get
from training.services.ab import ab_candidates_generate
from training.services.endpoints import endpoint_config_of, endpoint_samples, is_endpoint_version
from training.services.execution import RunReporter, run_execute
from training.services.runs import run_params_update, run_succeed


def candidate_tasks_create(
    *, project: Project, prompts: list[Prompt], samples: list[list[str]], version: ModelVersion, generation: dict[str, Any],
) -> dict[str, int]:
    """One comparison task per prompt with >= 2 distinct non-blank samples (at most K), its responses
    sourced to the version with the generation parameters."""
    created = {"tasks": 0, "responses": 0, "prompts_skipped": 0}
    specs = []
    for prompt, texts in zip(prompts, samples):
        texts = list(dict.fromkeys(t for t in texts if t.strip()))[: project.responses_per_task]
        if len(texts) < 2:
            created["prompts_skipped"] += 1
            continue
        specs.append(NewTask(prompt=prompt, responses=[
            NewResponse(text=t, source=version.name, model_version_id=version.pk, generation=generation) for t in texts
        ]))
    made = tasks_create(project=project, tasks=specs)
    created["tasks"], created["responses"] = len(made), sum(len(m.responses) for m in made)
    return created


def generator_backend(*, policy: ModelVersion) -> tuple[str, str]:
    """Which local sampler serves the run (training.ml.vllm_backend): settings.PAIRWISE_GENERATOR, an
    operator knob ("auto": vLLM where installed on a GPU, else transformers)."""
    from training.ml.common import pick_device
    from training.ml.vllm_backend import backend_choose

    return backend_choose(model_dir=policy.artifact_path, device=pick_device(settings.PAIRWISE_DEVICE),
                          requested=settings.PAIRWISE_GENERATOR)


def candidates_generate(*, run_id: int, worker: str = "", echo: Callable | None = None) -> dict[str, int] | None:
    """The body of the `candidates_generate` task: sample K responses per prompt from the promoted
    policy (the run's base version if set), batched, and create the comparison tasks together with
    the run's success, so a failed or reaped run creates no tasks."""
    return run_execute(run_id=run_id, worker=worker, what="candidates",
                       body=lambda run: _candidates_generate(run, echo))


def _candidates_generate(run: TrainingRun, echo) -> dict[str, int] | None:
    from training.ml.generate import generate_candidates

    project, params = run.project, run.params or {}
    if params.get("ab"):
        return ab_candidates_generate(run=run, echo=echo)
    policy = run.base_version or model_version_promoted_get(project=project, kind=ModelVersion.Kind.POLICY)
    if policy is None or policy.kind != ModelVersion.Kind.POLICY:
        raise ValueError("no promoted policy version (run manage.py install_base_models)")
    prompts = candidate_prompts_select(project=project, limit=int(params.get("max_prompts", 16)))
    if not prompts:
        raise ValueError("no prompt without an open task")
    generation = {
        "temperature": project.gen_temperature, "top_p": project.gen_top_p,
        "max_new_tokens": project.gen_max_new_tokens, "k": project.responses_per_task,
        "system_prompt": system_prompt_of(project), "seed": run.pk, "model_version": policy.pk,
    }
    endpoint = endpoint_config_of(version=policy, temperature=project.gen_temperature, top_p=project.gen_top_p,
                                  max_tokens=project.gen_max_new_tokens) if is_endpoint_version(policy) else None
    if endpoint is not None:  # a model server: its own sampling settings where it has them
        generation.update(temperature=endpoint.temperature, top_p=endpoint.top_p, max_new_tokens=endpoint.max_tokens,
                          endpoint={"base_url": endpoint.base_url, "model": endpoint.model})
    reporter = RunReporter(run_id=run.pk, span=(0.0, 0.98), echo=echo)
    if endpoint is None:
        generation["backend"], why = generator_backend(policy=policy)
        reporter.log(f"generating with {generation['backend']} ({why})")
    run_params_update(run_id=run.pk, policy_version=policy.pk, prompts=len(prompts), generation=generation)
    if endpoint is not None:
        samples = endpoint_samples(endpoint, prompts, k=project.responses_per_task,
                                   system_prompt=generation["system_prompt"], seed=run.pk, progress=reporter)
    else:
        samples = generate_candidates(
            policy.artifact_path, [prompt_input(p) for p in prompts], k=project.responses_per_task,
            temperature=project.gen_temperature, top_p=project.gen_top_p, max_new_tokens=project.gen_max_new_tokens,
            system_prompt=generation["system_prompt"], batch_size=int(params.get("batch_size", 16)), seed=run.pk,
            progress=reporter, device=settings.PAIRWISE_DEVICE, backend=generation["backend"],
        )
    reporter.flush()
    created: dict[str, int] = {}

    def write(locked: TrainingRun) -> None:
        created.update(candidate_tasks_create(project=project, prompts=prompts, samples=samples, version=policy,
                                              generation=generation))
        locked.params = {**(locked.params or {}), "created": dict(created)}
        locked.save(update_fields=["params"])

    if run_succeed(run_id=run.pk, version_fields=None, inside=write) is None:
        return None
    return created
