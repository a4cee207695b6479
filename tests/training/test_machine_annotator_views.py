"""The machine annotators' console pages (training.views): admins list, add, edit, remove and run them
through the services; the version select offers only the project's endpoint versions and a hand-posted
other one is refused on the field; service errors come back on their fields with 400; viewers and
annotators get 403, another project's admin 404."""
from __future__ import annotations

import pytest
from django.urls import reverse

from labeling.models import Membership
from training.ml.judge import default_template
from training.models import MachineAnnotator, ModelVersion
from training.services.machine_annotators import WORK_TASK, machine_annotator_create

pytestmark = pytest.mark.django_db


def _endpoint(project, name="judge-endpoint"):
    return ModelVersion.objects.create(project=project, kind="policy", name=name, base="b", artifact_path="/nowhere",
                                       config={"endpoint": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}})


def _url(name, project, **kwargs):
    return reverse(name, kwargs={"slug": project.slug, **kwargs})


@pytest.fixture
def sent(monkeypatch):
    queued = []
    monkeypatch.setattr("training.services.machine_annotators.task_send_on_commit",
                        lambda name, **kwargs: queued.append((name, kwargs)))
    return queued


def test_admin_adds_edits_runs_and_removes_one_through_the_pages(project_factory, member, client, sent):
    project, other = project_factory(mode="pairwise"), project_factory(mode="pairwise")
    admin = member(project, Membership.Role.ADMIN)
    mine, theirs = _endpoint(project), _endpoint(other, name="their-endpoint")
    ModelVersion.objects.create(project=project, kind="policy", name="plain-policy", base="b", artifact_path="/x")
    reward = ModelVersion.objects.create(project=project, kind="reward", name="own-reward", base="b", artifact_path="/x")
    ModelVersion.objects.create(project=None, kind="reward", name="shared-backbone", base="b", artifact_path="/x")
    ModelVersion.objects.create(project=project, kind="reward", name="archived-reward", base="b", artifact_path="/x",
                                status="archived")
    client.force_login(admin)
    page_url = _url("training-machine-annotators", project)

    assert _url("training-machine-annotators", project) in client.get(_url("training-runs", project)).content.decode()
    page = client.get(page_url)
    html = page.content.decode()
    assert page.status_code == 200 and "No machine annotators yet." in html
    # The versions the service accepts, and no other: its endpoints, then its own ready reward models.
    assert [o[0] for o in page.context["versions"]] == ["Chat model endpoints (judge with the prompt)",
                                                        "Reward models (rank by reward)"]
    assert f'<option value="{mine.pk}">' in html and f'<option value="{reward.pk}">' in html
    assert not any(name in html for name in ("their-endpoint", "plain-policy", "shared-backbone", "archived-reward"))
    form = page.context["form"]
    assert form["judge_prompt"].value() == default_template("pairwise") and not form["takes_overlap_seats"].value()
    assert "{response_b}" in html and "overlap seats" in html  # the placeholders and the seats warning are explained

    # The browser sends the textarea's lines with CRLF; the stored template is the default as it was.
    prompt = default_template("pairwise").replace("\n", "\r\n")
    made = client.post(page_url, {"name": "gpt-judge", "version": mine.pk, "judge_prompt": prompt})
    assert made.status_code == 302 and made["Location"] == page_url
    machine = MachineAnnotator.objects.get(project=project)
    assert (machine.name, machine.version_id, machine.takes_overlap_seats, machine.created_by) == ("gpt-judge", mine.pk, False, admin)
    assert machine.judge_prompt == default_template("pairwise")
    listed = client.get(page_url).content.decode()
    assert 'data-machine="gpt-judge"' in listed and "#machine-annotators" in listed

    run_url = _url("training-machine-annotator-run", project, machine_id=machine.pk)
    assert client.post(run_url).status_code == 302
    assert sent == [(WORK_TASK, {"machine_id": machine.pk, "max_tasks": 20})]

    edit_url = _url("training-machine-annotator-edit", project, machine_id=machine.pk)
    assert client.get(edit_url).status_code == 200
    bad = client.post(edit_url, {"enabled": "on", "judge_prompt": "{prompt} {response_a}"})
    assert bad.status_code == 400
    assert bad.context["form"].errors["judge_prompt"] == ["missing placeholder {response_b}"]
    saved = client.post(edit_url, {"judge_prompt": "Which? {prompt} A: {response_a} B: {response_b}", "takes_overlap_seats": "on"})
    assert saved.status_code == 302
    machine.refresh_from_db()
    assert (machine.enabled, machine.takes_overlap_seats, machine.judge_prompt) == (
        False, True, "Which? {prompt} A: {response_a} B: {response_b}")
    client.post(run_url)  # disabled: the service refuses, the page says why
    assert len(sent) == 1
    assert "the machine annotator is disabled; enable it first" in client.get(page_url).content.decode()

    delete_url = _url("training-machine-annotator-delete", project, machine_id=machine.pk)
    assert client.post(delete_url, {"confirm": "wrong"}).status_code == 302
    assert MachineAnnotator.objects.filter(pk=machine.pk).exists()  # not confirmed
    assert client.post(delete_url, {"confirm": "gpt-judge"}).status_code == 302
    assert not MachineAnnotator.objects.filter(pk=machine.pk).exists()
    assert not Membership.objects.filter(project=project, user=machine.user).exists()
    assert theirs.machine_annotators.count() == 0
    # A reward model offered by the select is one the service takes.
    assert client.post(page_url, {"name": "rm-judge", "version": reward.pk, "judge_prompt": prompt}).status_code == 302
    assert MachineAnnotator.objects.get(project=project).version == reward


def test_bad_input_comes_back_on_its_fields_with_400(project_factory, member, client):
    project, other = project_factory(mode="pairwise"), project_factory(mode="pairwise")
    mine, theirs = _endpoint(project), _endpoint(other, name="their-endpoint")
    client.force_login(member(project, Membership.Role.ADMIN))
    page_url = _url("training-machine-annotators", project)

    bad = client.post(page_url, {"name": "judge", "version": mine.pk, "judge_prompt": "{prompt} {response_a} {oops}"})
    assert bad.status_code == 400
    assert bad.context["form"].errors == {"judge_prompt": [
        "unknown placeholder {oops}: use only {instructions}, {prompt}, {response_a}, {response_b}"]}
    html = bad.content.decode()
    assert 'data-field="judge_prompt"' in html and "{oops}" in html  # the error on the field, the text kept

    # Another project's version id, posted by hand, gets the service's answer on the version field.
    foreign = client.post(page_url, {"name": "judge", "version": theirs.pk, "judge_prompt": default_template("pairwise")})
    assert foreign.status_code == 400 and set(foreign.context["form"].errors) == {"version"}
    both = client.post(page_url, {"name": "Bad Name", "version": "", "judge_prompt": ""})
    assert both.status_code == 400 and set(both.context["form"].errors) == {"name", "version", "judge_prompt"}
    assert not MachineAnnotator.objects.exists()


def test_only_the_projects_admins_reach_the_pages(project_factory, member, client, sent):
    project, other = project_factory(mode="pairwise"), project_factory(mode="pairwise")
    admin = member(project, Membership.Role.ADMIN)
    machine = machine_annotator_create(project=project, name="judge", version_id=_endpoint(project).pk, by=admin)
    urls = [("get", _url("training-machine-annotators", project), {}),
            ("post", _url("training-machine-annotators", project), {"name": "x", "version": machine.version_id}),
            ("get", _url("training-machine-annotator-edit", project, machine_id=machine.pk), {}),
            ("post", _url("training-machine-annotator-edit", project, machine_id=machine.pk), {"judge_prompt": "x"}),
            ("post", _url("training-machine-annotator-run", project, machine_id=machine.pk), {}),
            ("post", _url("training-machine-annotator-delete", project, machine_id=machine.pk), {"confirm": "judge"})]
    for user, expected in [(member(project, Membership.Role.VIEWER), 403), (member(project, Membership.Role.ANNOTATOR), 403),
                           (member(other, Membership.Role.ADMIN), 404)]:
        client.force_login(user)
        for method, url, data in urls:
            assert getattr(client, method)(url, data).status_code == expected, (user, url)
    # Another project's admin, on their own project's URLs, does not reach this machine either.
    other_edit = _url("training-machine-annotator-edit", other, machine_id=machine.pk)
    assert client.get(other_edit).status_code == 404
    assert client.post(_url("training-machine-annotator-run", other, machine_id=machine.pk)).status_code == 404
    client.logout()
    assert client.get(_url("training-machine-annotators", project)).status_code == 302  # to the login page
    machine.refresh_from_db()
    assert machine.judge_prompt == default_template("pairwise") and MachineAnnotator.objects.count() == 1 and sent == []
    client.force_login(admin)
    assert "Machine annotators" in client.get(_url("training-runs", project)).content.decode()
    client.force_login(member(project, Membership.Role.VIEWER))
    assert _url("training-machine-annotators", project) not in client.get(_url("training-runs", project)).content.decode()
