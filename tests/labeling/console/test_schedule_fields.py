"""The training schedule on the new-project form and the settings: shown together, with its threshold,
what counts toward it, and the off switch; turning it off (and on) through the form writes the project."""
from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from labeling.models import Project
from tests.labeling.console.test_views import FORM

pytestmark = pytest.mark.django_db


def schedule_box(html: str) -> str:
    match = re.search(r'<fieldset class="schedule" id="schedule">(.*?)</fieldset>', html, re.S)
    assert match, "no schedule box"
    return match.group(1)


def test_the_forms_show_the_schedule_with_its_threshold_and_off_switch(make_user, member, project_factory, settings):
    settings.PAIRWISE_RETRAIN_CHECK_MINUTES = 7
    staff = make_user(is_staff=True)
    client = Client()
    client.force_login(staff)
    box = schedule_box(client.get(reverse("console-project-create")).content.decode())
    assert "Scheduled training" in box and "On unless paused" in box
    assert 'name="retrain_min_judgments"' in box and 'value="100"' in box  # on by default, at 100
    assert 'name="retrain_paused"' in box and "checked" not in box
    assert "Checked every 7 minutes" in box and "human judgments" in box and "import asks" in box

    project = project_factory(retrain_min_judgments=40)
    admin = member(project, "admin")
    client.force_login(admin)
    url = reverse("console-settings", args=[project.slug])
    box = schedule_box(client.get(url).content.decode())
    assert 'value="40"' in box and "Pause scheduled training rounds" in box
    form = {**FORM, "name": project.name, "mode": project.mode, "responses_per_task": project.responses_per_task,
            "retrain_min_judgments": 25, "retrain_paused": "on"}
    assert client.post(url, form).status_code == 302
    project.refresh_from_db()
    assert (project.retrain_min_judgments, project.retrain_paused) == (25, True)
    assert "checked" in schedule_box(client.get(url).content.decode())
