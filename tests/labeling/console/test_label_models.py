"""The annotators tab's label-model section and its Refit button (what it shows, who may press it), and
the quality tab's majority-against-label-model table."""
import pytest
from django.test import Client
from django.urls import reverse

from labeling.models import LabelModelFit
from labeling.services.label_models import label_model_fit
from tests.labeling.judging import judge, make_tasks

pytestmark = pytest.mark.django_db

HOSTILE = '<script>alert("x")</script>&amp;'


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def judged(project_factory, member, make_user):
    """A project with an admin, a viewer, three good annotators and an always-first clicker with a
    hostile name, 30 judged tasks."""
    project = project_factory(mode="pairwise", responses_per_task=2, overlap=4)
    admin, viewer = member(project, "admin"), member(project, "viewer")
    good = [member(project, "annotator") for _ in range(3)]
    clicker = make_user(HOSTILE)
    from labeling.services.projects import membership_set

    membership_set(project=project, user=clicker, role="annotator")
    for n, task in enumerate(make_tasks(project, 30)):
        shown = [0, 1] if n % 2 else [1, 0]
        for user in good:
            judge(task, user, [[1], [0]] if n % 3 == 0 else [[0], [1]], shown=shown)
        judge(task, clicker, [[shown[0]], [shown[1]]], shown=shown)
    return project, admin, viewer, good, clicker


def test_before_a_fit_the_tab_says_so(judged):
    project, admin, *_ = judged
    body = client_for(admin).get(reverse("console-annotators", args=[project.slug])).content.decode()
    assert "Not fitted yet" in body and 'id="label-model-table"' not in body and 'id="refit-form"' in body


def test_the_tab_shows_accuracy_bias_agreement_and_flags_with_names_escaped(judged):
    project, admin, viewer, good, clicker = judged
    label_model_fit(project_id=project.pk)
    response = client_for(viewer).get(reverse("console-annotators", args=[project.slug]))
    body = response.content.decode()
    assert response.status_code == 200 and 'id="label-model-table"' in body
    assert HOSTILE not in body and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;amp;" in body
    table = body[body.index('id="label-model-table"'):]
    clicker_row = table[table.index("&lt;script&gt;"):].split("</tr>")[0]
    assert "always-first" in clicker_row and "picked the first-shown response in 30 of 30 decided votes" in clicker_row
    assert "1.000 of 30 vs 0.5" in clicker_row
    good_row = table[table.index(f'data-username="{good[0].username}"'):].split("</tr>")[0]
    assert "always-first" not in good_row and "spammer" not in good_row and "of 30 vs 0.5" in good_row
    assert 'id="refit-form"' not in body  # viewers read, admins refit
    other = client_for(viewer).get(reverse("console-annotators", args=[project.slug]), {"model": "position-em"})
    assert 'aria-current="true">position-em' in other.content.decode()
    bogus = client_for(viewer).get(reverse("console-annotators", args=[project.slug]), {"model": "<b>"})
    assert 'aria-current="true">dawid-skene' in bogus.content.decode()


def test_admin_refit_runs_the_fit(judged, eager, django_capture_on_commit_callbacks):
    project, admin, *_ = judged
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(admin).post(reverse("console-label-models-refit", args=[project.slug]))
    assert response.status_code == 302 and response["Location"] == reverse("console-annotators", args=[project.slug])
    assert LabelModelFit.objects.get(project=project).judgments == 120


def test_refit_refused_to_viewers_annotators_and_other_projects_admins(judged, project_factory, member,
                                                                       django_capture_on_commit_callbacks):
    project, admin, viewer, good, _ = judged
    stranger = member(project_factory(), "admin")
    url = reverse("console-label-models-refit", args=[project.slug])
    with django_capture_on_commit_callbacks(execute=True) as sent:
        assert client_for(viewer).post(url).status_code == 403
        assert client_for(good[0]).post(url).status_code == 403
        assert client_for(stranger).post(url).status_code == 404
        assert client_for(admin).get(url).status_code == 405
    assert sent == [] and not LabelModelFit.objects.exists()
    anonymous = Client().post(url)
    assert anonymous.status_code == 302 and "login" in anonymous["Location"]


def test_refit_needs_the_csrf_token(judged):
    project, admin, *_ = judged
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    assert client.post(reverse("console-label-models-refit", args=[project.slug])).status_code == 403


def test_quality_tab_compares_majority_with_the_label_models(judged):
    project, admin, viewer, *_ = judged
    url = reverse("dashboard-project", args=[project.slug])
    assert "Not fitted yet" in client_for(viewer).get(url).content.decode().split('id="label-model-consensus"')[1]
    fit = label_model_fit(project_id=project.pk)
    body = client_for(viewer).get(url).content.decode()
    section = body[body.index('id="label-model-consensus"'):].split("</section>")[0]
    for name in ("dawid-skene", "position-em"):
        against = fit.fits[name]["versus_majority"]
        row = section[section.index(f"<td>{name}</td>"):].split("</tr>")[0]
        assert f"<td>{against['pairs']}</td><td>{against['decided']}</td><td class=\"flips\">{against['flips']}</td>" in row
    assert "<td>majority</td>" not in section
