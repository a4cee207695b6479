"""Fitting the label models of a project (labeling/label_models.py) and storing the latest fit.

A refit runs in the worker (labeling.tasks.label_model_fit): on demand (the annotators tab's
button) and after about every LABEL_MODEL_BATCH submitted judgments. The submit path pays one
random draw for that, no query and no shared counter row: a per-project counter would put every
annotator's submit on one row lock, and the fit reads every judgment anyway.
"""
from __future__ import annotations

import random

from django.db import IntegrityError, transaction

from config.tasks_send import task_send_on_commit
from labeling.label_models import MODELS, label_models_fit, versus_majority
from labeling.models import LabelModelFit, Project
from labeling.selectors.label_models import label_model_votes

LABEL_MODEL_BATCH = 500


def label_model_fit(*, project_id: int) -> LabelModelFit | None:
    """Fit every model on the project's current human judgments and replace its stored fit.
    Idempotent: a re-delivered task fits the same judgments again. None for a missing or deleted project."""
    project = Project.objects.filter(pk=project_id, deleted_at__isnull=True).first()
    if project is None:
        return None
    votes, gold, judgments = label_model_votes(project=project)
    fits = label_models_fit(votes=votes, gold=gold, models=MODELS)
    against = versus_majority(fits)
    stored = {name: {"seconds": fit.seconds, "annotators": {str(a): s for a, s in fit.annotators.items()},
                     **({"versus_majority": against[name]} if name in against else {})}
              for name, fit in fits.items()}
    posteriors = {f"{a}-{b}": {name: fits[name].probs[k, 0] + fits[name].probs[k, 2] / 2 for name in fits}
                  for k, (a, b) in enumerate(fits[MODELS[0]].items)}
    posteriors = {key: {name: round(float(p), 6) for name, p in row.items()} for key, row in posteriors.items()}
    values = {"judgments": judgments, "votes": len(votes), "fits": stored, "posteriors": posteriors}
    for _ in range(2):  # two first fits of one project race to create the row: the loser updates it
        try:
            with transaction.atomic():
                fit, _ = LabelModelFit.objects.update_or_create(project=project, defaults=values)
                return fit
        except IntegrityError:
            continue
    raise RuntimeError(f"could not store the label-model fit of project {project_id}")


def label_model_fit_request(*, project: Project) -> None:
    """Queue a refit of the project's label models (after the current transaction commits)."""
    task_send_on_commit("labeling.tasks.label_model_fit", project.pk)


def label_model_fit_after_judgment(*, project: Project, rng: random.Random | None = None) -> bool:
    """Called by every submit: queue a refit with probability 1 / LABEL_MODEL_BATCH, so a project
    is refitted about once per batch of its judgments whatever its size. True when it queued one."""
    if (rng or random).random() * LABEL_MODEL_BATCH >= 1:
        return False
    label_model_fit_request(project=project)
    return True
