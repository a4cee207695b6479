"""The django-celery-beat schedules: the reaper, the lease sweep, and each project's training-round check."""
from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.db import transaction

from labeling.models import Project
from training.selectors.data import training_snapshot_find
from training.selectors.runs import pipeline_spec
from training.services.runspec import round_spec_check

REAPER_SCHEDULE_NAME = "pairwise: reap stale training runs"
LEASE_SWEEP_SCHEDULE_NAME = "pairwise: return expired leases to the pool"
EXPORT_REAPER_SCHEDULE_NAME = "pairwise: reap stale export jobs"
IMPORT_REAPER_SCHEDULE_NAME = "pairwise: reap stale import jobs"
RETRAIN_SCHEDULE_PREFIX = "pairwise: reward retrain check: "


def schedules_setup(*, check_minutes: int | None = None, pipeline_options: dict[str, Any] | None = None) -> dict[str, int]:
    """Create the django-celery-beat schedules. Idempotent, and it never overwrites a schedule that
    was edited (so edits made in the admin survive); schedules of deleted projects are disabled.

    - the reapers of training runs, of export jobs and of import jobs, every minute;
    - the sweep that returns expired annotator leases to the pool, every minute;
    - per project, the training round check every `check_minutes` (PAIRWISE_RETRAIN_CHECK_MINUTES, 5):
      reward retrain -> policy retrain -> evaluation -> optional auto-promotion -> candidates
      (reward_retrain_check). pipeline_options (policy_kind, auto_promote_margin, promote_metric,
      step_params) go into the kwargs of new schedules and of those still holding the defaults they
      were made with at project creation, where an admin can edit them later.
    Both go to the `celery` queue, so they are never stuck behind a training run.
    """
    if pipeline_options:  # refuse bad options before writing anything: parsed, then checked against every project
        spec = pipeline_spec(**pipeline_options)
        # A mixed-in snapshot's own project cannot mix it (it trains on it already): its round check
        # refuses and logs that at run time, so it is not checked here, or no schedule could mix at all.
        mixed = (spec.get("params") or {}).get("reward", {}).get("mix_snapshots") or ()
        owners = {found.project_id for found in (training_snapshot_find(snapshot_id=i) for i in mixed) if found}
        for project in Project.objects.filter(deleted_at__isnull=True).exclude(pk__in=owners).order_by("id"):
            round_spec_check(project=project, user=None, spec=spec)
    from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

    minutes = check_minutes or int(getattr(settings, "PAIRWISE_RETRAIN_CHECK_MINUTES", 5))
    counts = {"created": 0, "existing": 0, "disabled": 0, "updated": 0}
    with transaction.atomic():
        every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.MINUTES)
        check_every, _ = IntervalSchedule.objects.get_or_create(every=minutes, period=IntervalSchedule.MINUTES)
        wanted = {
            REAPER_SCHEDULE_NAME: ("training.tasks.runs_reap_stale", every_minute, {}),
            LEASE_SWEEP_SCHEDULE_NAME: ("labeling.tasks.assignments_expire_sweep", every_minute, {}),
            EXPORT_REAPER_SCHEDULE_NAME: ("labeling.tasks.export_jobs_reap_stale", every_minute, {}),
            IMPORT_REAPER_SCHEDULE_NAME: ("labeling.tasks.import_jobs_reap_stale", every_minute, {}),
        }
        for project in Project.objects.filter(deleted_at__isnull=True).order_by("id"):
            wanted[f"{RETRAIN_SCHEDULE_PREFIX}{project.slug}"] = (
                "training.tasks.reward_retrain_check", check_every, {"project_id": project.pk, **(pipeline_options or {})},
            )
        for name, (task, interval, kwargs) in wanted.items():
            counts["created" if _schedule_get_or_create(name, task, interval, kwargs) else "existing"] += 1
        if pipeline_options:
            counts["updated"] = _defaults_replace(wanted)
        stale = PeriodicTask.objects.filter(name__startswith=RETRAIN_SCHEDULE_PREFIX, enabled=True).exclude(name__in=wanted)
        counts["disabled"] = stale.update(enabled=False)
        if counts["disabled"]:
            PeriodicTasks.update_changed()  # a bulk update sends no signal; tell beat to reload
    return counts


def _defaults_replace(wanted: dict[str, tuple]) -> int:
    """Give the round options to project schedules that still hold the defaults they were made with
    (kwargs exactly {"project_id": ...}, as project_schedule_ensure writes them); edited ones are kept."""
    from django_celery_beat.models import PeriodicTask

    updated = 0
    for schedule in PeriodicTask.objects.filter(name__in=wanted, name__startswith=RETRAIN_SCHEDULE_PREFIX):
        kwargs = wanted[schedule.name][2]
        if json.loads(schedule.kwargs or "{}") == {"project_id": kwargs["project_id"]}:
            schedule.kwargs = json.dumps(kwargs)
            schedule.save(update_fields=["kwargs"])
            updated += 1
    return updated


def _schedule_get_or_create(name: str, task: str, interval, kwargs: dict[str, Any]) -> bool:
    from django_celery_beat.models import PeriodicTask

    _, created = PeriodicTask.objects.get_or_create(name=name, defaults={
        "task": task, "interval": interval, "kwargs": json.dumps(kwargs), "queue": "celery",
        "description": "Created with the project or by manage.py setup_schedules; edit freely (per-project kwargs: "
                       "policy_kind, auto_promote_margin, promote_metric, step_params). Pause it from the project's "
                       "settings (retrain_paused).",
    })
    return created


def project_schedule_ensure(*, project: Project) -> bool:
    """The project's training-round check, made with the project (settings.PAIRWISE_PROJECT_CREATED_HOOKS):
    every PAIRWISE_RETRAIN_CHECK_MINUTES with the default round options. True when it was created."""
    from django_celery_beat.models import IntervalSchedule

    minutes = int(getattr(settings, "PAIRWISE_RETRAIN_CHECK_MINUTES", 5))
    every, _ = IntervalSchedule.objects.get_or_create(every=minutes, period=IntervalSchedule.MINUTES)
    return _schedule_get_or_create(f"{RETRAIN_SCHEDULE_PREFIX}{project.slug}", "training.tasks.reward_retrain_check",
                                   every, {"project_id": project.pk})
