"""A reward version as a machine annotator: only a ready reward version of the project's own is taken
(anything else gets the one 400 a missing id gets), it ranks a task's responses by the tiny reward
model's scores through the real queue (a tie only where float32 cannot tell the scores apart), keeps the scores and
P(pick is best), and a version whose files are gone stops it with last_error."""
from __future__ import annotations

import pytest

from labeling.models import Assignment, Judgment, Project
from labeling.selectors.integrity import integrity_problems
from labeling.selectors.machine_quality import machine_quality_report
from tests.labeling.judging import tasks_with_responses
from training.ml.calibration import sigmoid
from training.models import ModelVersion
from training.services.machine_annotators import machine_annotator_work
from training.services.reward import reward_task_scores

pytestmark = pytest.mark.django_db

POLITE, RUDE = "yes, happy to help with 99!", "no. 99"


def _url(project):
    return f"/api/training/projects/{project.slug}/machine-annotators/"


def _reward_version(project, **fields):
    return ModelVersion.objects.create(project=project, kind="reward", name=f"rm-{ModelVersion.objects.count()}",
                                       base="b", artifact_path="/nowhere", **fields)


def test_only_a_ready_reward_version_of_the_project_s_own_is_taken(trained, project_factory, member, api_client):
    project, version = trained
    client = api_client(member(project, "admin"))
    missing = client.post(_url(project), {"name": "rm", "version": 999999}, format="json")
    assert missing.status_code == 400
    theirs = _reward_version(project_factory())
    shared_base = _reward_version(None, config={"role": "base"})
    archived = _reward_version(project, status=ModelVersion.Status.ARCHIVED)
    for other in (theirs, shared_base, archived):
        answer = client.post(_url(project), {"name": "rm", "version": other.pk}, format="json")
        assert (answer.status_code, answer.json()) == (400, missing.json())
    made = client.post(_url(project), {"name": "rm", "version": version.pk}, format="json")
    assert made.status_code == 201, made.content
    assert (made.json()["version"], made.json()["source"]) == (version.pk, "machine:rm")
    detail = f"{_url(project)}{made.json()['id']}/"
    assert client.patch(detail, {"version": theirs.pk}, format="json").status_code == 400
    assert client.patch(detail, {"version": version.pk}, format="json").status_code == 200


def test_a_reward_version_ranks_by_reward_through_the_queue(trained, member, api_client):
    project, version = trained
    Project.objects.filter(pk=project.pk).update(mode="pairwise", responses_per_task=2)  # its imported pairs are K=2
    project.refresh_from_db()
    made = api_client(member(project, "admin")).post(_url(project), {"name": "rm", "version": version.pk}, format="json")
    machine_id = made.json()["id"]
    # The model learned that the polite answer wins; the same text twice scores the same, up to float32 noise.
    rude_first, polite_first, same = tasks_with_responses(project, {
        "question number 97?": [RUDE, POLITE], "question number 98?": [POLITE, RUDE],
        "question number 99?": [{"text": POLITE, "source": "a"}, {"text": POLITE, "source": "b"}]})[-3:]
    result = machine_annotator_work(machine_id=machine_id, max_tasks=1000)
    assert result["reason"] != "error" and result["judged"] >= 3
    for task in (rude_first, polite_first):
        judgment = Judgment.objects.get(task=task, source="machine:rm")
        texts = dict(task.responses.values_list("pk", "text"))
        polite, rude = (next(rid for rid, t in texts.items() if t == want) for want in (POLITE, RUDE))
        assert judgment.ranking == [[polite], [rude]]
        scores = dict(judgment.machine["scores"])
        assert scores == pytest.approx(dict(reward_task_scores(version=version, task=task)))
        assert judgment.machine["pick"] == polite and judgment.machine["probability"] > 0.5
        assert judgment.machine["probability"] == pytest.approx(sigmoid(scores[polite] - scores[rude]))
        assert (judgment.machine["consistent"], judgment.machine["version"]) == (True, version.pk)
        assert not judgment.counts_for_overlap and f"{polite}: " in judgment.rationale
    tie = Judgment.objects.get(task=same, source="machine:rm")
    assert len(tie.ranking) == 1 and tie.machine["probability"] == pytest.approx(0.5)
    [row] = machine_quality_report(project=project)
    assert row["order_consistency"] == 1.0 and [v["version"] for v in row["versions"]] == [version.pk]
    assert integrity_problems(project=project) == []


def test_a_reward_version_whose_files_are_gone_stops_with_last_error(trained, member, api_client):
    project, version = trained
    made = api_client(member(project, "admin")).post(_url(project), {"name": "rm", "version": version.pk}, format="json")
    tasks_with_responses(project, {"question number 99?": [RUDE, POLITE, "no. 98", "no. 97"]})
    ModelVersion.objects.filter(pk=version.pk).update(artifact_path="/nowhere/at/all")
    assert machine_annotator_work(machine_id=made.json()["id"], max_tasks=5) == {"judged": 0, "reason": "error"}
    machine = project.machine_annotators.get()
    assert "gone" in machine.last_error and machine.working_until is None
    assert not Assignment.objects.filter(annotator=machine.user, state="active").exists()
    assert not Judgment.objects.filter(source="machine:rm").exists()
