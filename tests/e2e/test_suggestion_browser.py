"""Suggestions in a real browser: the labeling page asks for the promoted reward model's pick only
after the judgment is stored, and shows it (with its probability) for the task just judged."""
from __future__ import annotations

import pytest

from labeling.models import Judgment
from tests.e2e.pages import open_label, wait_saved
from tests.labeling.judging import make_tasks
from tests.training.conftest import import_preferences, separable_records, train_reward
from training.models import Suggestion

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]


def test_the_pick_appears_only_after_submitting(page_for, live_server, project_factory, member, tiny_reward_base, models_dir):
    project = project_factory(mode="pairwise", likert_enabled=False, flags_enabled=False, suggestions_enabled=True,
                              reward_promote_min_heldout_groups=0)
    import_preferences(project, separable_records(12))
    version = train_reward(project, tiny_reward_base)
    make_tasks(project, 2)
    person = member(project, "annotator")
    page = page_for(person)
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url) if "/suggestion/" in request.url else None)
    open_label(page, live_server, project)
    assert page.locator("#suggestion").is_hidden()
    page.keyboard.press("a")
    page.wait_for_timeout(300)
    assert asked == [] and page.locator("#suggestion").is_hidden()  # chosen but not submitted: nothing asked
    page.keyboard.press("Enter")
    wait_saved(page, 1)
    page.wait_for_selector("#suggestion:not([hidden])")
    judgment = Judgment.objects.get(project=project, annotator=person)
    assert asked == [f"{live_server.url}/api/training/projects/{project.slug}/judgments/{judgment.pk}/suggestion/"]
    suggestion = Suggestion.objects.get(judgment=judgment)
    assert suggestion.version_id == version.pk
    shown = page.locator("#suggestion").inner_text()
    assert f"{round(100 * suggestion.probability)}%" in shown and "you chose A" in shown and version.name in shown
