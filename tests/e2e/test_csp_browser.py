"""Every page works under the Content-Security-Policy: no violation reported, the labeling page
still takes a judgment by keyboard (Debian chromium via Playwright, against a live server)."""
from __future__ import annotations

import pytest
from django_celery_beat.models import CrontabSchedule

from labeling.models import Judgment
from tests.e2e.pages import open_label, wait_saved, watch_csp
from tests.labeling.judging import judge, make_tasks
from training.models import ModelVersion, TrainingRun

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

def admin_pages(project, response, judgment) -> list[str]:
    return [
        "/admin/", f"/admin/labeling/project/{project.pk}/change/", f"/admin/labeling/project/{project.pk}/import/",
        "/admin/labeling/response/", f"/admin/labeling/response/{response.pk}/change/",
        "/admin/labeling/judgment/", f"/admin/labeling/judgment/{judgment.pk}/change/",
        "/admin/training/trainingrun/", "/admin/labeling/project/add/", "/admin/labeling/membership/",
        "/admin/auth/user/", "/admin/django_celery_beat/periodictask/add/",
    ]


def training_history(project) -> None:
    """A finished reward run with curves and a version, so the runs page draws its SVG and buttons."""
    version = ModelVersion.objects.create(project=project, kind="reward", name="rm-1", base="b", artifact_path="/x")
    TrainingRun.objects.create(
        project=project, kind="reward", status="succeeded", progress=1.0, result_version=version,
        metrics_history=[{"step": s, "loss": 1 / (s + 1), "accuracy": s / 10} for s in range(5)],
    )


def test_every_page_works_under_the_csp(page_for, live_server, project_factory, member):
    project = project_factory(mode="pairwise", instructions="Pick the **better** one.")
    tasks = make_tasks(project, 3)
    admin = member(project, "admin")
    admin.is_staff = admin.is_superuser = True
    admin.save()
    judgment = judge(tasks[2], member(project, "annotator"), [[0], [1]], rationale="clear")
    training_history(project)
    response = tasks[0].slots.first().response

    page = page_for(admin)
    violations = watch_csp(page)
    headers = page.goto(f"{live_server.url}/").headers
    assert "script-src 'self'" in headers["content-security-policy"]

    open_label(page, live_server, project)
    page.keyboard.press("a")
    page.keyboard.press("Enter")
    wait_saved(page, 1)
    assert Judgment.objects.filter(annotator=admin).count() == 1

    assert page.goto(f"{live_server.url}/dashboard/{project.slug}/").status == 200
    page.wait_for_selector("svg.chart", state="attached")
    page.goto(f"{live_server.url}/training/{project.slug}/")
    page.wait_for_selector("svg.curve polyline")
    page.wait_for_timeout(300)  # runs.js polls the JSON view once in this time
    for path in admin_pages(project, response, judgment):
        assert page.goto(f"{live_server.url}{path}").status == 200, path
        page.wait_for_selector("#content")
    # django-celery-beat's crontab help, moved out of its inline script, still works.
    crontab = CrontabSchedule.objects.create(minute="0", hour="*")
    page.goto(f"{live_server.url}/admin/django_celery_beat/periodictask/add/")
    page.select_option("#id_crontab", str(crontab.pk))
    page.wait_for_selector(".field-crontab .help:has-text('Translation:')")
    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector(".swagger-ui .opblock")  # Swagger UI ran and rendered the schema
    assert violations == []


def test_login_page_under_the_csp(browser, live_server, make_user):
    user = make_user()
    context = browser.new_context()
    page = context.new_page()
    violations = watch_csp(page)
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", "pw-" + user.username)
    page.keyboard.press("Enter")
    page.wait_for_selector("h1:has-text('Your projects')")
    page.goto(f"{live_server.url}/admin/login/")
    page.wait_for_selector("#content")
    context.close()
    assert violations == []
