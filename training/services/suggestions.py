"""Suggestions after the human commits: once an annotator's judgment is stored, the project's
promoted reward model scores the task's responses and the labeling page shows its pick and how sure
it is (never before submitting, so the pick cannot steer the judgment). Each suggestion is kept with
the human's ranking: the stored suggestions are what the deployed model's online accuracy is
measured on (training.selectors.suggestions)."""
from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import IntegrityError, transaction

from labeling.models import MACHINE_SOURCE_PREFIX, Judgment
from training.models import ModelVersion, Suggestion
from training.selectors.suggestions import suggestion_judgment_check
from training.selectors.versions import model_version_promoted_get
from training.services.reward import reward_task_scores


class SuggestionUnavailable(Exception):
    """Nothing to suggest: suggestions are off in the project, or it has no promoted reward model of its own."""


def suggestion_for_judgment(*, judgment: Judgment, user: AbstractUser) -> Suggestion:
    """The judgment's suggestion, made on first request and stored (the same one after that, whatever
    was promoted since: it is what the annotator was shown). Http404 unless the user is the judgment's
    annotator or a project admin (suggestion_judgment_check); SuggestionUnavailable when suggestions
    are off or no reward model of the project is promoted."""
    suggestion_judgment_check(judgment=judgment, user=user)
    project = judgment.project
    if not project.suggestions_enabled:
        raise SuggestionUnavailable("Suggestions are off in this project.")
    stored = Suggestion.objects.select_related("version").filter(judgment=judgment).first()
    if stored is not None:
        return stored
    # Only a reward model trained on this project scores (a shared reward backbone has no reward head).
    version = model_version_promoted_get(project=project, kind=ModelVersion.Kind.REWARD)
    if version is None or version.project_id != project.pk:
        raise SuggestionUnavailable("This project has no promoted reward model yet.")
    if not judgment.ranking or judgment.annotator_id is None or judgment.source.startswith(MACHINE_SOURCE_PREFIX):
        # Only a person's judgment from the labeling page measures the deployed model online.
        raise SuggestionUnavailable("Suggestions are for people's judgments with a ranking.")
    scores = reward_task_scores(version=version, task=judgment.task)
    from training.ml.calibration import best_of

    top, probability = best_of([r for _, r in scores])
    try:
        with transaction.atomic():
            return Suggestion.objects.create(
                judgment=judgment, version=version, scores=[[rid, r] for rid, r in scores], pick=scores[top][0],
                probability=probability, human_ranking=judgment.ranking)
    except IntegrityError:  # two requests at once: the first one's stands
        return Suggestion.objects.select_related("version").get(judgment=judgment)
