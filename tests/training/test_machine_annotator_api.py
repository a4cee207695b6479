"""The machine annotators' API: field errors, versions scoped to the project (another project's version
gets the same 400 as a missing one), another project's admin gets 404; the quality tab and API show a
machine, and each version it judged with."""
from __future__ import annotations

import pytest

from labeling.models import Membership
from tests.labeling.judging import judge, tasks_with_responses
from training.models import ModelVersion

pytestmark = pytest.mark.django_db


def _endpoint(project, name="judge-endpoint"):
    return ModelVersion.objects.create(project=project, kind="policy", name=name, base="b", artifact_path="/nowhere",
                                       config={"endpoint": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}})


def test_versions_names_and_templates_are_checked(project_factory, member, api_client):
    project, other = project_factory(mode="pairwise"), project_factory(mode="pairwise")
    admin = member(project, "admin")
    url = f"/api/training/projects/{project.slug}/machine-annotators/"
    client = api_client(admin)
    mine, theirs = _endpoint(project), _endpoint(other)
    plain = ModelVersion.objects.create(project=project, kind="policy", name="plain", base="b", artifact_path="/x")
    missing = client.post(url, {"name": "j", "version": 999999}, format="json")
    assert missing.status_code == 400
    for version in (theirs, plain):
        answer = client.post(url, {"name": "j", "version": version.pk}, format="json")
        assert (answer.status_code, answer.json()) == (400, missing.json())
    bad = client.post(url, {"name": "Bad Name", "version": mine.pk, "judge_prompt": "{prompt} {response_a}"}, format="json")
    assert bad.status_code == 400 and set(bad.json()) == {"name", "judge_prompt"}
    made = client.post(url, {"name": "j", "version": mine.pk}, format="json")
    assert made.status_code == 201 and "{response_b}" in made.json()["judge_prompt"]
    assert client.post(url, {"name": "j", "version": mine.pk}, format="json").json().keys() == {"name"}
    detail = f"{url}{made.json()['id']}/"
    assert client.patch(detail, {"version": theirs.pk}, format="json").status_code == 400
    assert client.patch(detail, {"judge_prompt": "{prompt}"}, format="json").status_code == 400
    changed = client.patch(detail, {"enabled": False, "takes_overlap_seats": True}, format="json")
    assert changed.status_code == 200 and changed.json()["enabled"] is False
    assert client.post(f"{detail}run/").status_code == 400  # disabled

    bot = project.machine_annotators.get().user
    assert not bot.is_active and not bot.has_usable_password()
    assert Membership.objects.get(project=project, user=bot).role == "annotator"
    assert not api_client().login(username=bot.username, password="")  # no session for it, whatever the password

    outsider = api_client(member(other, "admin"))
    assert outsider.get(detail.replace(project.slug, other.slug)).status_code == 404  # not in their project
    assert outsider.get(detail).status_code == 404  # not their project
    assert client.delete(detail).status_code == 204
    assert not Membership.objects.filter(project=project, user=bot).exists()


def test_the_quality_tab_and_api_show_a_machine_against_people(project_factory, member, api_client, client):
    project = project_factory(mode="pairwise", responses_per_task=2, overlap=2)
    first, second = tasks_with_responses(project, {"q": ["long answer", "short"], "r": ["long answer", "short"]})
    admin, person, bot = member(project, "admin"), member(project, "annotator"), member(project, "annotator")
    old, new = _endpoint(project, "old-judge"), _endpoint(project, "new-judge")
    judge(first, person, [[0], [1]]), judge(second, person, [[0], [1]])
    # The old version agreed with the person, the new one (after the admin switched) did not.
    judge(first, bot, [[0], [1]], source="machine:judge", counts_for_overlap=False,
          machine={"consistent": True, "version": old.pk})
    judge(second, bot, [[1], [0]], source="machine:judge", counts_for_overlap=False,
          machine={"consistent": True, "version": new.pk})
    [row] = api_client(admin).get(f"/api/projects/{project.slug}/quality/", {"rounds": 0}).json()["machines"]
    assert (row["source"], row["items"], row["agreement_with_ties"], row["order_consistency"]) == ("machine:judge", 2, 0.5, 1.0)
    assert [(v["version"], v["items"], v["agreement_with_ties"]) for v in row["versions"]] == [(old.pk, 1, 1.0), (new.pk, 1, 0.0)]
    client.force_login(admin)
    page = client.get(f"/dashboard/{project.slug}/").content.decode()
    assert 'id="machine-annotators"' in page and "machine:judge" in page
    assert f"version {old.pk}" in page and f"version {new.pk}" in page
