"""Every mode from the page, server side: demonstrate tasks from a prompts-only import, and revising
a judgment through POST /api/judgments/<id>/correct/ (the page's "revise last")."""
from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from labeling.models import ComparisonTask, Demonstration, Judgment, PreferencePair, TaskResponse
from labeling.selectors.exports import ExportFilters
from labeling.selectors.integrity import integrity_problems
from labeling.selectors.queue import judgment_last_payload
from tests.labeling.judging import export, import_rows, make_tasks
from training.selectors.data import training_dataset_collect

pytestmark = pytest.mark.django_db

PROMPTS = [{"id": "d1", "prompt": "Explain tides."}, {"id": "d2", "messages": [{"role": "user", "content": "Hi?"}]}]


def test_prompts_only_import_gives_demonstrate_projects_one_task_per_prompt(project_factory):
    demo, rank = project_factory(mode="demonstrate"), project_factory(mode="rank")
    result = import_rows(demo, *PROMPTS)
    assert (result.prompts, result.tasks, result.responses) == (2, 2, 0)
    tasks = ComparisonTask.objects.filter(project=demo)
    assert {t.prompt.external_id for t in tasks} == {"d1", "d2"} and not tasks.filter(is_gold=True).exists()
    assert not TaskResponse.objects.filter(task__project=demo).exists()
    assert import_rows(demo, *PROMPTS).tasks == 0  # a re-import adds nothing
    assert ComparisonTask.objects.filter(project=demo).count() == 2
    # Other modes keep bare prompts for candidate generation.
    assert import_rows(rank, *PROMPTS).tasks == 0 and not ComparisonTask.objects.filter(project=rank).exists()


def test_demonstration_written_through_the_queue_reaches_training_data(project_factory, member, api_client):
    project = project_factory(mode="demonstrate", overlap=1)
    import_rows(project, *PROMPTS)
    client = api_client(member(project, "annotator"), token=False)
    body = client.post(f"/api/projects/{project.slug}/next/", format="json").json()
    current = body["current"]
    assert current["responses"] == [] and body["next"] is not None
    res = client.post(f"/api/assignments/{current['assignment']}/submit/",
                      {"text": "Tides come from the Moon.", "idempotency_key": "k1"}, format="json")
    assert res.status_code == 201, res.content
    demo = Demonstration.objects.get(pk=res.json()["demonstration"])
    assert (demo.prompt_id, demo.text) == (current["prompt"]["id"], "Tides come from the Moon.")
    assert ComparisonTask.objects.get(pk=current["task"]).status == ComparisonTask.Status.COMPLETE
    assert integrity_problems(project=project) == []
    dataset = training_dataset_collect(project=project, filters=ExportFilters())
    assert [d["response"] for d in dataset.demonstrations] == ["Tides come from the Moon."]


@pytest.fixture
def judged(project_factory, member, api_client):
    """A rank project (K=3) where an annotator has submitted one judgment through the API."""
    project = project_factory(mode="rank", responses_per_task=3, likert_enabled=False)
    make_tasks(project, 2)
    user = member(project, "annotator")
    client = api_client(user, token=False)
    current = client.post(f"/api/projects/{project.slug}/next/", format="json").json()["current"]
    order = [r["id"] for r in current["responses"]]
    res = client.post(f"/api/assignments/{current['assignment']}/submit/",
                      {"ranking": [[rid] for rid in order], "idempotency_key": "first"}, format="json")
    assert res.status_code == 201
    return project, user, client, Judgment.objects.get(pk=res.json()["judgment"]), order


def _correct(client, judgment_id, ranking, key="fix", **extra):
    return client.post(f"/api/judgments/{judgment_id}/correct/", {"ranking": ranking, "idempotency_key": key, **extra},
                       format="json")


def test_correction_supersedes_in_pairs_exports_and_integrity(judged):
    project, user, client, old, (a, b, c) = judged
    res = _correct(client, old.pk, [[c], [a, b]], rationale="c was best after all")
    assert res.status_code == 201, res.content
    new = Judgment.objects.get(pk=res.json()["judgment"])
    assert res.json()["supersedes"] == old.pk and new.supersedes_id == old.pk and new.annotator == user
    assert not PreferencePair.objects.filter(judgment=old).exists()
    assert set(PreferencePair.objects.values_list("chosen_id", "rejected_id")) == {(c, a), (c, b)}
    exported = [json.loads(line) for line in export(project, "ranked").splitlines()]
    assert [row["id"] for row in exported] == [new.pk]
    assert integrity_problems(project=project) == []
    call_command("check_integrity", "--project", project.slug)  # exits 1 on a problem
    # A retry returns the same correction; the old judgment cannot be corrected twice.
    assert _correct(client, old.pk, [[c], [a, b]]).json()["judgment"] == new.pk
    again = _correct(client, old.pk, [[a], [b], [c]], key="fix-2")
    assert again.status_code == 409 and again.json()["code"] == "superseded"
    # The page's "revise last" now reopens the correction.
    last = judgment_last_payload(annotator=user, project=project)
    assert (last["judgment"], last["ranking"], last["rationale"]) == (new.pk, [[c], [a, b]], "c was best after all")
    assert [r["id"] for r in last["responses"]] == [a, b, c]


def test_correction_refusals(judged, member, api_client):
    project, user, client, old, (a, b, c) = judged
    bad = _correct(client, old.pk, [[a], [b]])
    assert bad.status_code == 400 and "ranking" in bad.json()
    colleague = api_client(member(project, "annotator"), token=False)
    foreign = _correct(colleague, old.pk, [[a], [b], [c]], key="theirs")
    assert foreign.status_code == 409 and foreign.json()["code"] == "foreign"
    assert _correct(api_client(member(project, "viewer"), token=False), old.pk, [[a, b, c]]).status_code == 404
    assert _correct(client, old.pk + 1000, [[a, b, c]]).status_code == 404
    reused = _correct(client, old.pk, [[a, b, c]], key="first")  # the original submit's key
    assert reused.status_code == 409 and reused.json()["code"] == "key_reused"
    assert Judgment.objects.count() == 1 and PreferencePair.objects.filter(judgment=old).count() == 3


def test_correct_is_in_the_openapi_schema():
    from drf_spectacular.generators import SchemaGenerator

    operation = SchemaGenerator().get_schema(request=None, public=True)["paths"]["/api/judgments/{judgment_id}/correct/"]["post"]
    assert {"201", "400", "404", "409"} <= set(operation["responses"])
    body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body.endswith("/CorrectInputRequest")
