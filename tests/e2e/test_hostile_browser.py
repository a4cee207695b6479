"""Hostile model output is inert on every page that shows it: the labeling page, the dashboard, the
training runs page and the admin. No dialog opens, nothing is requested from another origin, the
CSP never has to block anything (so the escaping alone holds), and the labeling page still works.
Real chromium via Playwright against a live server."""
from __future__ import annotations

import pytest

from labeling.models import ComparisonTask, Demonstration, Judgment, Prompt, Response
from tests.e2e.pages import open_label, wait_saved, watch_csp
from tests.labeling.judging import judge
from training.models import ModelVersion, TrainingRun

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

HOSTILE = (
    "<script>window.__pwned=1;alert(1)</script> <img src=x onerror=alert(1)> [x](javascript:alert(1)) "
    "![p](http://evil.example/p.png) <a href=\"http://evil.example/\">a</a> <svg onload=alert(1)> "
    "ctl\x07\x1b[31m\x01\x7f \u202eevil\u202c \u2028 \"'><b onmouseover=alert(1)>"
)
BIG = "big " * 262_144  # 1 MiB


def hostile_project(project_factory, member):
    project = project_factory(mode="rank", responses_per_task=3, likert_enabled=False, name=HOSTILE[:200],
                              instructions=HOSTILE + "\n\n![i](http://evil.example/i.png)")
    tasks = []
    for n, texts in enumerate([[HOSTILE, BIG, "*fine*"], ["a " + HOSTILE, "b", "c"]]):
        prompt = Prompt.objects.create(project=project, external_id=f"evil{n}", text=HOSTILE)
        task = ComparisonTask.objects.create(project=project, prompt=prompt)
        for pos, text in enumerate(texts):
            task.slots.create(response=Response.objects.create(prompt=prompt, text=text, source=HOSTILE[:255]),
                              position=pos)
        tasks.append(task)
    # Someone else judged the second task (the dashboard and the admin show the rationale and sources).
    judgment = judge(tasks[1], member(project, "annotator"), [[0], [1, 2]], rationale=HOSTILE)
    demonstration = Demonstration.objects.create(project=project, prompt=tasks[0].prompt, text=HOSTILE)
    version = ModelVersion.objects.create(project=project, kind="policy", name=HOSTILE[:200], base="b", artifact_path="/x")
    TrainingRun.objects.create(project=project, kind="dpo", status="failed", error=HOSTILE, result_version=version,
                               metrics_history=[{"step": s, "loss": 1 / (s + 1)} for s in range(4)])
    return project, tasks, judgment, demonstration


def admin_pages(project, tasks, judgment, demonstration) -> list[str]:
    big = Response.objects.get(text=BIG)
    return [
        "/admin/labeling/response/", f"/admin/labeling/response/{big.pk}/change/",
        f"/admin/labeling/response/{tasks[0].slots.first().response_id}/change/",
        "/admin/labeling/judgment/", f"/admin/labeling/judgment/{judgment.pk}/change/",
        "/admin/labeling/project/", f"/admin/labeling/project/{project.pk}/change/",
        f"/admin/labeling/prompt/{tasks[0].prompt_id}/change/",
        f"/admin/labeling/demonstration/{demonstration.pk}/change/",
        "/admin/training/trainingrun/", "/admin/training/modelversion/",
    ]


def test_hostile_text_is_inert_everywhere(page_for, live_server, project_factory, member):
    project, tasks, judgment, demonstration = hostile_project(project_factory, member)
    admin = member(project, "admin")
    admin.is_staff = admin.is_superuser = True
    admin.save()
    page = page_for(admin)
    violations = watch_csp(page)
    dialogs, foreign = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: foreign.append(r.url) if not r.url.startswith((live_server.url, "data:")) else None)

    open_label(page, live_server, project)
    assert page.locator(".response").count() == 3 and BIG[:100] in page.content()
    page.hover(".response .md")
    assert page.locator("a[href^='javascript'], .md img[src], .md script, .md svg, [onerror], [onload]").count() == 0
    # The override inside model text stays inside its isolated container (see pairwise.css).
    bidi = page.evaluate("() => [...document.querySelectorAll('#prompt .md, .response .md, #task .md')]"
                         ".map(e => [e.getAttribute('dir'), getComputedStyle(e).unicodeBidi])")
    assert bidi and all(b == ["auto", "isolate"] for b in bidi), bidi
    assert page.locator(".project-name bdi").count() == 1
    page.keyboard.press("Enter")  # past the rating step
    page.keyboard.press("Enter")  # submit the shown order
    wait_saved(page, 1)
    assert Judgment.objects.filter(annotator=admin).count() == 1

    pages = [f"/dashboard/{project.slug}/", f"/training/{project.slug}/", "/"]
    for path in pages + admin_pages(project, tasks, judgment, demonstration):
        assert page.goto(f"{live_server.url}{path}").status == 200, path
        page.wait_for_load_state("load")
        assert "&lt;script&gt;window.__pwned=1" in page.content(), path  # the text is there, as text
        assert page.evaluate("() => window.__pwned") is None, path
    page.wait_for_timeout(300)
    assert dialogs == [] and foreign == [] and violations == [], (dialogs, foreign, violations)
