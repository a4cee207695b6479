"""Machine annotators: a chat model (a registered endpoint version the project may use), or a reward model
of the project's own, that judges the project's tasks through the same queue as people, as its own bot user.

It asks the judge about every response pair in both orders (training.ml.judge): an inconsistent pair is a
tie, and both replies stay with the judgment (Judgment.rationale and Judgment.machine). Its judgments carry
source "machine:<name>", so no human measure, label model, export or training snapshot counts them unless
asked for by that name; labeling.selectors.machine_quality measures them against the people. By default it
takes no overlap seat (Assignment.holds_seat): it judges beside the people, tasks they completed included,
and never keeps a task from one. A request that fails for good (after the endpoint client's retries of
429s, 5xx and timeouts) releases its leases, is kept as last_error, and stops the work. A reward model
instead scores the task's responses (training.services.reward.reward_task_scores) and ranks them by reward;
its judge_prompt is kept but unused.

Where the project enables Likert ratings or flags, a chat judge is also asked about each response alone
(training.ml.judge.rating_text: the project's flags with their labels), and its ratings and flags go into the
verdict, validated as a person's are; what a reply got wrong is left out and counted in Judgment.machine's
"rating", and the judgment keeps its ranking. A reward version gives neither: a scalar reward is no Likert
rating and names no flag.

One batch at a time per machine: a batch claims MachineAnnotator.working_until, so a redelivered message
and a re-sent one never both call the endpoint (and never both lease tasks for its one bot user).
"""
from __future__ import annotations

import logging
import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from config.tasks_send import task_send_on_commit
from labeling.models import MACHINE_SOURCE_PREFIX, Membership, Project, Response
from labeling.services.assignment import (
    Verdict, assignments_release, judgment_submit, ranking_likert_contradiction, task_assign_next,
)
from labeling.services.projects import membership_set
from training.models import MachineAnnotator, ModelVersion
from training.selectors.data import prompt_rm_text
from training.selectors.machine_annotators import machine_annotator_versions
from training.services.endpoints import endpoint_judge_replies, endpoint_rating_replies, is_endpoint_version
from training.services.reward import reward_task_scores

logger = logging.getLogger(__name__)

WORK_TASK = "training.tasks.machine_annotator_work"
WORK_BATCH = 20  # tasks per task message: a batch ends well inside the task's time limit, then re-sends itself
WORK_SOFT_TIME_LIMIT_S = 1800
# The task's hard limit, and so how long a batch's claim can stand: the worker kills a batch by then, and
# a claim left by a killed (or lost) one lapses with it, so the next message works again.
WORK_TIME_LIMIT_S = WORK_SOFT_TIME_LIMIT_S + 60
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")  # it becomes the judgments' source: "machine:<name>"
LAST_ERROR_MAX_CHARS = 2000
UPDATABLE = ("version_id", "judge_prompt", "takes_overlap_seats", "enabled")


def machine_source(*, machine: MachineAnnotator) -> str:
    return f"{MACHINE_SOURCE_PREFIX}{machine.name}"


def _judge_mode_check(project: Project) -> None:
    from training.ml.judge import DEFAULT_TEMPLATES

    if project.mode not in DEFAULT_TEMPLATES:
        raise ValidationError({"project": f"a machine annotator judges rankings; a {project.mode} project collects none"})


def _version_clean(*, project: Project, version_id: object) -> ModelVersion:
    """One of machine_annotator_versions (the rule the console offers too). A missing id, another
    project's version and a version that is neither get the same answer: nothing tells them apart."""
    if isinstance(version_id, int) and not isinstance(version_id, bool):
        for versions in machine_annotator_versions(project=project).values():
            found = next((v for v in versions if v.pk == version_id), None)
            if found is not None:
                return found
    raise ValidationError({"version": "no endpoint or reward version with this id in the project "
                                      "(register an endpoint under endpoints/, or train a reward model)"})


def _prompt_clean(judge_prompt: object) -> str:
    from training.ml.judge import template_problems

    problem = template_problems(judge_prompt)
    if problem:
        raise ValidationError({"judge_prompt": problem})
    return judge_prompt


def _bot_user_create(*, project: Project, name: str) -> AbstractUser:
    """The machine's own account: inactive with no usable password, so no one can log in as it or hold a
    token for it; a project annotator, so the queue serves it as it serves people."""
    user = get_user_model()(username=f"machine-{uuid.uuid4().hex[:12]}", first_name=name[:150], is_active=False)
    user.set_unusable_password()
    user.save()
    membership_set(project=project, user=user, role=Membership.Role.ANNOTATOR)
    return user


def machine_annotator_create(
    *, project: Project, name: str, version_id: object, judge_prompt: str | None = None,
    takes_overlap_seats: bool = False, enabled: bool = True, by: AbstractUser | None = None,
) -> MachineAnnotator:
    """Add a machine annotator to the project (judge_prompt None: the mode's default). ValidationError
    keyed by field for a bad name, version or template."""
    from training.ml.judge import default_template

    _judge_mode_check(project)
    name = (name or "").strip() if isinstance(name, str) else ""
    errors: dict[str, str] = {}
    if not NAME_PATTERN.match(name):
        errors["name"] = "1 to 64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"
    elif MachineAnnotator.objects.filter(project=project, name=name).exists():
        errors["name"] = f"the project already has a machine annotator named {name!r}"
    version = template = None
    try:
        version = _version_clean(project=project, version_id=version_id)
    except ValidationError as exc:
        errors.update({k: v[0] for k, v in exc.message_dict.items()})
    try:
        template = _prompt_clean(default_template(project.mode) if judge_prompt is None else judge_prompt)
    except ValidationError as exc:
        errors.update({k: v[0] for k, v in exc.message_dict.items()})
    if errors:
        raise ValidationError(errors)
    try:
        with transaction.atomic():
            return MachineAnnotator.objects.create(
                project=project, name=name, version=version, judge_prompt=template,
                takes_overlap_seats=bool(takes_overlap_seats), enabled=bool(enabled),
                user=_bot_user_create(project=project, name=name), created_by=by,
            )
    except IntegrityError:  # the same name created concurrently
        raise ValidationError({"name": f"the project already has a machine annotator named {name!r}"}) from None


def machine_annotator_update(*, machine: MachineAnnotator, **changes: Any) -> MachineAnnotator:
    """Change the version, the judge template, whether it takes overlap seats, or enabled (its name is its
    judgments' source, so it stays). Disabling it, or changing whether it takes seats, releases its leases:
    they were taken under the old setting."""
    unknown = set(changes) - set(UPDATABLE)
    if unknown:
        raise ValidationError({name: "cannot be changed" for name in sorted(unknown)})
    if "version_id" in changes:
        try:
            _version_clean(project=machine.project, version_id=changes["version_id"])
        except ValidationError as exc:
            raise ValidationError({"version": exc.message_dict["version"]}) from None
    if "judge_prompt" in changes:
        _prompt_clean(changes["judge_prompt"])
    release = (changes.get("enabled") is False
               or ("takes_overlap_seats" in changes and bool(changes["takes_overlap_seats"]) != machine.takes_overlap_seats))
    with transaction.atomic():
        for field, value in changes.items():
            setattr(machine, field, bool(value) if field in ("enabled", "takes_overlap_seats") else value)
        if changes.get("enabled"):
            machine.last_error = ""  # enabled again: a fresh start
        machine.save()
        if release:
            assignments_release(project=machine.project, annotator=machine.user)
    return machine


def machine_annotator_delete(*, machine: MachineAnnotator) -> None:
    """Remove the machine annotator: its leases go back to the pool and its bot leaves the project. Its
    judgments stay, as a removed person's do (their source still names it), and so does the inactive bot
    account they point at."""
    with transaction.atomic():
        assignments_release(project=machine.project, annotator=machine.user)
        Membership.objects.filter(project=machine.project, user=machine.user).delete()
        machine.delete()


def machine_annotator_run(*, machine: MachineAnnotator) -> None:
    """Queue its work (a no-op for a disabled one: the task checks again)."""
    if not machine.enabled:
        raise ValidationError({"enabled": "the machine annotator is disabled; enable it first"})
    task_send_on_commit(WORK_TASK, machine_id=machine.pk, max_tasks=WORK_BATCH)


def machine_annotator_work(*, machine_id: int, max_tasks: int) -> dict[str, Any]:
    """Judge up to max_tasks tasks as the machine's bot user, then queue the next batch while tasks
    remain. Idempotent: a redelivered message finds the same held leases, and a judgment's key is its
    assignment's, so a task is never judged twice. While another message's batch holds the machine's
    claim it returns at once ("busy"): that batch goes on, and re-sends itself. {"judged": n, "reason":
    why it stopped}."""
    claim = _work_claim(machine_id=machine_id)
    if claim is None:
        exists = MachineAnnotator.objects.filter(pk=machine_id).exists()
        return {"judged": 0, "reason": "busy" if exists else "disabled"}
    try:
        result = _work_batch(machine_id=machine_id, max_tasks=max_tasks)
    finally:
        # Only its own claim: one that lapsed meanwhile may be another batch's now.
        MachineAnnotator.objects.filter(pk=machine_id, working_until=claim).update(working_until=None)
    if result["reason"] == "batch" and MachineAnnotator.objects.filter(pk=machine_id, enabled=True).exists():
        # Sent after the claim is let go, so the next batch finds it free.
        task_send_on_commit(WORK_TASK, machine_id=machine_id, max_tasks=max_tasks)
    return result


def _work_claim(*, machine_id: int) -> datetime | None:
    """Claim the machine for one batch: its working_until, set in a short transaction under the row's
    lock (a row another message is claiming is skipped, not waited for). The claim's time, or None when
    the machine is gone or another batch holds an unexpired claim."""
    now = timezone.now()
    with transaction.atomic():
        machine = (MachineAnnotator.objects.select_for_update(skip_locked=True).filter(pk=machine_id)
                   .only("pk", "working_until").first())
        if machine is None or (machine.working_until is not None and machine.working_until > now):
            return None
        machine.working_until = now + timedelta(seconds=WORK_TIME_LIMIT_S)
        machine.save(update_fields=["working_until"])
        return machine.working_until


def _work_batch(*, machine_id: int, max_tasks: int) -> dict[str, Any]:
    machine = (MachineAnnotator.objects.select_related("project", "version", "user")
               .filter(pk=machine_id).first())
    if machine is None or not machine.enabled or machine.project.deleted_at is not None:
        return {"judged": 0, "reason": "disabled"}
    from training.ml.endpoint import EndpointError

    judged = 0
    while judged < max_tasks:
        nxt = task_assign_next(annotator=machine.user, project=machine.project, takes_seat=machine.takes_overlap_seats)
        if nxt.assignment is None:
            return {"judged": judged, "reason": nxt.reason}
        try:
            _assignment_judge(machine=machine, assignment=nxt.assignment)
        except (EndpointError, ValidationError) as exc:  # ValidationError: a reward version's files gone, say
            # The tasks go back to the pool (a seat-holder's seats with them); the admin reads why and runs it again.
            assignments_release(project=machine.project, annotator=machine.user)
            why = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            MachineAnnotator.objects.filter(pk=machine.pk).update(last_error=why[:LAST_ERROR_MAX_CHARS])
            logger.warning("machine annotator %s stopped: %s", machine.pk, why)
            return {"judged": judged, "reason": "error"}
        judged += 1
    return {"judged": judged, "reason": "batch"}


def _assignment_judge(*, machine: MachineAnnotator, assignment) -> None:
    """Ask the judge about every pair of the task in both orders, and submit the ranking they give (a
    reward version: _assignment_score)."""
    if not is_endpoint_version(machine.version):
        _assignment_score(machine=machine, assignment=assignment)
        return
    from training.ml.judge import judge_pairs, judge_text, pair_judgment, pairs_ranking, pairs_rationale

    shown = list(assignment.shown_order)
    texts = dict(Response.objects.filter(pk__in=shown).values_list("pk", "text"))
    prompt = prompt_rm_text(assignment.task.prompt)
    pairs = judge_pairs(shown)
    asked = [judge_text(machine.judge_prompt, prompt=prompt, a=texts[a], b=texts[b], instructions=machine.project.instructions)
             for first, second in pairs for a, b in ((first, second), (second, first))]
    replies = endpoint_judge_replies(version=machine.version, prompts=asked)
    judged = [pair_judgment(first, second, replies[2 * i], replies[2 * i + 1]) for i, (first, second) in enumerate(pairs)]
    ranking = pairs_ranking(shown, judged)
    likert, flags, rating = _responses_rate(machine=machine, shown=shown, texts=texts, prompt=prompt, ranking=ranking)
    judgment_submit(
        assignment=assignment, annotator=machine.user, idempotency_key=f"machine-{machine.pk}-{assignment.pk}",
        verdict=Verdict(ranking=ranking, likert=likert, flags=flags, rationale=pairs_rationale(judged)),
        source=machine_source(machine=machine),
        machine={"consistent": all(p.status == "consistent" for p in judged), "version": machine.version_id,
                 "pairs": [p.as_dict() for p in judged], **({"rating": rating} if rating else {})},
    )


def _responses_rate(*, machine: MachineAnnotator, shown: list[int], texts: dict[int, str], prompt: str,
                    ranking: list[list[int]]) -> tuple[dict, dict, dict | None]:
    """(likert, flags, what the judge said and what was dropped) from one rating question per response,
    asked only for what the project enables ({}, {}, None when it enables neither)."""
    from training.ml.judge import parse_rating, rating_text

    project = machine.project
    flag_choices = project.flag_choices if project.flags_enabled else []
    if not project.likert_enabled and not flag_choices:
        return {}, {}, None
    asked = [rating_text(prompt=prompt, response=texts[rid], instructions=project.instructions,
                         likert=project.likert_enabled, flags=flag_choices) for rid in shown]
    replies = endpoint_rating_replies(version=machine.version, prompts=asked)
    rated = [parse_rating(reply, likert=project.likert_enabled, flag_keys=[key for key, _ in flag_choices])
             for reply in replies]
    likert = {str(rid): r.likert for rid, r in zip(shown, rated) if r.likert is not None}
    flags = {str(rid): list(r.flags) for rid, r in zip(shown, rated) if r.flags}
    contradicted = (project.mode == Project.Mode.RANK and bool(likert)
                    and ranking_likert_contradiction(ranking, likert) is not None)
    summary = {
        "replies": {str(rid): reply for rid, reply in zip(shown, replies)},
        "unparsed": sum(not r.parsed for r in rated),
        "likert_dropped": sum(r.likert_dropped for r in rated) + (len(likert) if contradicted else 0),
        "flags_dropped": sum(r.flags_dropped for r in rated),
        # A K-way verdict whose ratings contradict its ranking is refused from a person; the machine's
        # ranking (from both orders of every pair) is the stronger answer, so its ratings go instead.
        "likert_contradicts_ranking": contradicted,
    }
    return ({} if contradicted else likert), flags, summary


def _assignment_score(*, machine: MachineAnnotator, assignment) -> None:
    """Score the task's responses with the reward version and submit them ranked by reward, with the
    scores and P(its pick is best) (softmax of the rewards: sigmoid of the margin for two responses)."""
    from training.ml.calibration import best_of, reward_ranking

    scores = reward_task_scores(version=machine.version, task=assignment.task)
    ids, rewards = [rid for rid, _ in scores], [r for _, r in scores]
    top, probability = best_of(rewards)
    judgment_submit(
        assignment=assignment, annotator=machine.user, idempotency_key=f"machine-{machine.pk}-{assignment.pk}",
        verdict=Verdict(ranking=reward_ranking(ids, rewards),
                        rationale=f"reward model {machine.version.name}: " + ", ".join(f"{rid}: {r:.4f}" for rid, r in scores)),
        source=machine_source(machine=machine),
        # A reward model scores each response alone, so the order it is shown in cannot sway it: there is
        # no order swap to ask, and its verdict is consistent by construction.
        machine={"consistent": True, "version": machine.version_id, "kind": "reward",
                 "scores": [[rid, r] for rid, r in scores], "pick": ids[top], "probability": probability},
    )
