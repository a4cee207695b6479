"""Suggestions after the human commits (training.services.suggestions, the API the labeling page
calls once a judgment is stored) and the deployed reward model's online accuracy on them
(training.selectors.suggestions): who may read a pick, that none exists before the judgment does,
when there is none to give, and agreement and calibration against hand-computed values."""
from __future__ import annotations

import pytest
from django.urls import reverse

from labeling.models import Judgment
from tests.training.conftest import judge, ranked_task
from training.ml.calibration import sigmoid
from training.models import ModelVersion, Suggestion
from training.selectors.suggestions import suggestion_accuracy

pytestmark = pytest.mark.django_db

POLITE, RUDE = "yes, happy to help with 99!", "no. 99"


def _url(project, judgment_id):
    return reverse("api-training-judgment-suggestion", args=[project.slug, judgment_id])


@pytest.fixture
def suggesting(trained, member):
    """A project with a promoted reward model (it learned: the polite answer wins), suggestions on,
    and one person's judgment of a new task, the rude answer shown first."""
    project, version = trained
    project.suggestions_enabled = True
    project.save(update_fields=["suggestions_enabled"])
    task, (rude, polite) = ranked_task(project, "question number 99?", [RUDE, POLITE])
    person = member(project, "annotator")
    judgment = judge(project, task, [[polite.pk], [rude.pk]], "s1", annotator=person)
    return project, version, judgment, person, polite, rude


def test_the_annotator_gets_the_promoted_model_s_pick_once_and_it_is_kept(suggesting, api_client):
    project, version, judgment, person, polite, rude = suggesting
    got = api_client(person).get(_url(project, judgment.pk))
    assert got.status_code == 200, got.content
    body = got.json()
    assert (body["version"], body["pick"], body["human_ranking"]) == (version.pk, polite.pk, [[polite.pk], [rude.pk]])
    scores = dict((rid, r) for rid, r in body["scores"])
    assert body["probability"] == pytest.approx(sigmoid(scores[polite.pk] - scores[rude.pk])) and body["probability"] > 0.5
    again = api_client(person).get(_url(project, judgment.pk)).json()
    assert again == body and Suggestion.objects.filter(judgment=judgment).count() == 1


def test_only_the_annotator_and_the_project_s_admins_see_a_pick(suggesting, api_client, member, project_factory):
    project, _, judgment, _, _, _ = suggesting
    assert api_client(member(project, "annotator")).get(_url(project, judgment.pk)).status_code == 404
    assert api_client(member(project, "viewer")).get(_url(project, judgment.pk)).status_code == 404
    other = project_factory()
    other_admin = member(other, "admin")
    assert api_client(other_admin).get(_url(project, judgment.pk)).status_code == 404  # not a member here
    assert api_client(other_admin).get(_url(other, judgment.pk)).status_code == 404  # not a judgment of theirs
    assert api_client(member(project, "admin")).get(_url(project, judgment.pk)).status_code == 200
    assert api_client().get(_url(project, judgment.pk)).status_code in (401, 403)


def test_there_is_no_pick_before_the_judgment_exists(suggesting, api_client):
    project, _, judgment, person, _, _ = suggesting
    not_yet = Judgment.objects.order_by("-pk").values_list("pk", flat=True).first() + 1
    assert api_client(person).get(_url(project, not_yet)).status_code == 404
    assert not Suggestion.objects.exists()


def test_no_pick_when_suggestions_are_off_or_no_reward_model_is_promoted(suggesting, api_client):
    project, version, judgment, person, _, _ = suggesting
    project.suggestions_enabled = False
    project.save(update_fields=["suggestions_enabled"])
    assert api_client(person).get(_url(project, judgment.pk)).status_code == 409
    project.suggestions_enabled = True
    project.save(update_fields=["suggestions_enabled"])
    ModelVersion.objects.filter(pk=version.pk).update(promoted=False)
    refused = api_client(person).get(_url(project, judgment.pk))
    assert refused.status_code == 409 and "no promoted reward model" in refused.json()["detail"]
    assert not Suggestion.objects.exists()


def test_the_labeling_page_offers_the_pick_only_where_suggestions_are_on(suggesting, client):
    project, _, _, person, _, _ = suggesting
    client.force_login(person)
    page = client.get(reverse("label", args=[project.slug]))
    assert page.context["config"]["urls"]["suggestion"] == _url(project, 0)
    # The page carries where to ask, never an answer: nothing was scored for the task on screen.
    assert b'id="suggestion"' in page.content and b'"pick"' not in page.content and not Suggestion.objects.exists()
    project.suggestions_enabled = False
    project.save(update_fields=["suggestions_enabled"])
    page = client.get(reverse("label", args=[project.slug]))
    assert page.context["config"]["urls"]["suggestion"] is None and b'id="suggestion"' not in page.content


def test_online_agreement_and_calibration_by_hand(trained, member, client, api_client):
    project, version = trained
    person = member(project, "annotator")
    rows = []
    # Three judgments scored by the version. Pairs the people decided, and the model's side:
    #   1: r = (2, 0), person 1 > 2: confidence sigmoid(2), a hit
    #   2: r = (0, 1), person 1 > 2: confidence sigmoid(1), a miss
    #   3: r = (0.5, 0, 3), person [1] > [2, 3] (2 and 3 tied: no pair): (1, 2) hit at sigmoid(0.5), (1, 3) miss at sigmoid(2.5)
    for n, (scores, ranking) in enumerate([
        ({1: 2.0, 2: 0.0}, [[1], [2]]), ({1: 0.0, 2: 1.0}, [[1], [2]]), ({1: 0.5, 2: 0.0, 3: 3.0}, [[1], [2, 3]]),
    ]):
        task, _ = ranked_task(project, f"online {n}", ["a", "b"])
        j = judge(project, task, ranking, f"o{n}", annotator=person)
        rows.append(Suggestion.objects.create(judgment=j, version=version, scores=[[k, v] for k, v in scores.items()],
                                              pick=max(scores, key=scores.get), probability=0.5, human_ranking=ranking))
    got = suggestion_accuracy(project=project)[version.pk]
    assert (got["suggestions"], got["pairs"], got["agreement"]) == (3, 4, 0.5)
    from labeling.stats import wilson_interval

    assert got["ci95"] == wilson_interval(2, 4)
    # 10 bins: sigmoid(0.5) = 0.622 -> bin 6 (hit); sigmoid(1) = 0.731 -> bin 7 (miss);
    # sigmoid(2) = 0.881 -> bin 8 (hit); sigmoid(2.5) = 0.924 -> bin 9 (miss). One prediction a bin:
    expected = (abs(1 - sigmoid(0.5)) + abs(0 - sigmoid(1)) + abs(1 - sigmoid(2)) + abs(0 - sigmoid(2.5))) / 4
    assert got["ece"] == pytest.approx(expected)

    admin = member(project, "admin")
    listed = api_client(admin).get(reverse("api-training-versions", args=[project.slug])).json()
    listed = listed["results"] if isinstance(listed, dict) else listed
    online = next(v for v in listed if v["id"] == version.pk)["online"]
    assert online["pairs"] == 4 and online["agreement"] == 0.5 and online["ece"] == pytest.approx(expected)
    client.force_login(admin)
    page = client.get(reverse("training-runs", args=[project.slug])).content.decode()
    assert 'class="online-agreement">0.500<' in page and f'class="online-ece">{expected:.3f}<' in page
