"""The API permission matrix: anonymous, annotator of another project, viewer, annotator, admin."""
import io

import pytest

from labeling.models import Demonstration, Membership, Project, Prompt
from labeling.services.imports import project_data_import

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "outsider", "viewer", "annotator", "admin"]


@pytest.fixture
def world(project_factory, member, make_user):
    project = project_factory(mode="pairwise", slug="main")
    other = project_factory(slug="other")
    data = b'{"id": "1", "prompt": "q", "chosen": "good", "rejected": "bad"}\n{"id": "p9", "prompt": "solo"}\n'
    project_data_import(project=project, stream=io.BytesIO(data), filename="seed.jsonl")
    users = {
        "anonymous": None,
        "outsider": member(other, "annotator"),
        "viewer": member(project, "viewer"),
        "annotator": member(project, "annotator"),
        "admin": member(project, "admin"),
    }
    return project, users


# role -> expected status for each read endpoint
READS = {
    "api-project": {"anonymous": 401, "outsider": 404, "viewer": 200, "annotator": 200, "admin": 200},
    "api-prompts": {"anonymous": 401, "outsider": 404, "viewer": 200, "annotator": 200, "admin": 200},
    # Responses carry their source and tasks is_gold: annotators must not learn either.
    "api-responses": {"anonymous": 401, "outsider": 404, "viewer": 200, "annotator": 403, "admin": 200},
    "api-tasks": {"anonymous": 401, "outsider": 404, "viewer": 200, "annotator": 403, "admin": 200},
    "api-judgments": {"anonymous": 401, "outsider": 404, "viewer": 200, "annotator": 200, "admin": 200},
    "api-demonstrations": {"anonymous": 401, "outsider": 404, "viewer": 200, "annotator": 200, "admin": 200},
    "api-imports": {"anonymous": 401, "outsider": 404, "viewer": 403, "annotator": 403, "admin": 200},
    "api-members": {"anonymous": 401, "outsider": 404, "viewer": 403, "annotator": 403, "admin": 200},
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", sorted(READS))
def test_read_matrix(world, api_client, role, name):
    project, users = world
    response = api_client(users[role]).get(f"/api/{_path(name, project)}")
    assert response.status_code == READS[name][role], response.content


def _path(name: str, project: Project) -> str:
    suffix = {"api-project": ""}.get(name, name.removeprefix("api-") + "/")
    return f"projects/{project.slug}/{suffix}"


WRITES = {
    "patch-project": {"anonymous": 401, "outsider": 404, "viewer": 403, "annotator": 403, "admin": 200},
    "import": {"anonymous": 401, "outsider": 404, "viewer": 403, "annotator": 403, "admin": 201},
    "demonstrate": {"anonymous": 401, "outsider": 404, "viewer": 403, "annotator": 201, "admin": 201},
    "add-member": {"anonymous": 401, "outsider": 404, "viewer": 403, "annotator": 403, "admin": 201},
    "delete-project": {"anonymous": 401, "outsider": 404, "viewer": 403, "annotator": 403, "admin": 204},
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", sorted(WRITES))
def test_write_matrix(world, api_client, make_user, role, action):
    project, users = world
    client = api_client(users[role])
    base = f"/api/projects/{project.slug}/"
    if action == "patch-project":
        response = client.patch(base, {"instructions": "Be kind"}, format="json")
    elif action == "import":
        upload = io.BytesIO(b'{"prompt": "new one"}\n')
        upload.name = "new.jsonl"
        response = client.post(base + "imports/", {"file": upload}, format="multipart")
    elif action == "demonstrate":
        prompt = Prompt.objects.get(external_id="p9")
        response = client.post(base + "demonstrations/", {"prompt": prompt.pk, "text": "ideal"}, format="json")
    elif action == "add-member":
        newcomer = make_user()
        response = client.post(base + "members/", {"username": newcomer.username, "role": "viewer"}, format="json")
    else:
        response = client.delete(base)
    assert response.status_code == WRITES[action][role], response.content


def test_annotators_see_only_their_own_demonstrations(world, api_client):
    project, users = world
    prompt = Prompt.objects.get(external_id="p9")
    Demonstration.objects.create(project=project, prompt=prompt, author=users["admin"], text="admin's")
    mine = api_client(users["annotator"]).post(
        f"/api/projects/{project.slug}/demonstrations/", {"prompt": prompt.pk, "text": "mine"}, format="json")
    assert mine.status_code == 201
    listed = api_client(users["annotator"]).get(f"/api/projects/{project.slug}/demonstrations/").json()
    assert [d["text"] for d in listed["results"]] == ["mine"]
    assert api_client(users["admin"]).get(f"/api/projects/{project.slug}/demonstrations/").json()["count"] == 2


def test_project_list_shows_only_memberships_and_staff_creates(world, api_client, make_user):
    project, users = world
    slugs = [p["slug"] for p in api_client(users["viewer"]).get("/api/projects/").json()["results"]]
    assert slugs == ["main"]
    assert api_client(users["admin"]).post("/api/projects/", {"name": "N", "slug": "n"}, format="json").status_code == 403
    staff = make_user(is_staff=True)
    created = api_client(staff).post("/api/projects/", {"name": "N", "slug": "n", "mode": "pairwise"}, format="json")
    assert created.status_code == 201 and created.json()["responses_per_task"] == 2
    assert Membership.objects.get(project__slug="n", user=staff).role == "admin"


def test_field_errors_are_400(world, api_client, make_user):
    project, users = world
    staff = make_user(is_staff=True)
    bad = api_client(staff).post("/api/projects/", {"name": "N", "slug": "bad slug!", "overlap": 0}, format="json")
    assert bad.status_code == 400 and {"slug", "overlap"} <= set(bad.json())
    patch = api_client(users["admin"]).patch(f"/api/projects/{project.slug}/", {"gold_rate": 3}, format="json")
    assert patch.status_code == 400 and "gold_rate" in patch.json()


def test_import_errors_are_400_with_line_numbers_and_nothing_written(world, api_client):
    project, users = world
    before = Prompt.objects.count()
    upload = io.BytesIO(b'{"prompt": "fine"}\n{"prompt": 5}\n')
    upload.name = "bad.jsonl"
    response = api_client(users["admin"]).post(f"/api/projects/{project.slug}/imports/", {"file": upload},
                                               format="multipart")
    assert response.status_code == 400
    assert response.json()["errors"] == [{"line": 2, "field": "prompt", "message": "must be a non-empty string"}]
    assert Prompt.objects.count() == before


def test_session_auth_works_and_pagination(world, api_client):
    project, users = world
    body = api_client(users["viewer"], token=False).get(f"/api/projects/{project.slug}/prompts/").json()
    assert set(body) == {"count", "next", "previous", "results"} and body["count"] == 2


def test_soft_deleted_project_disappears_but_rows_stay(world, api_client):
    project, users = world
    assert api_client(users["admin"]).delete(f"/api/projects/{project.slug}/").status_code == 204
    assert api_client(users["admin"]).get(f"/api/projects/{project.slug}/").status_code == 404
    assert Prompt.objects.filter(project=project).count() == 2
    assert Project.objects.get(pk=project.pk).deleted_at is not None


def test_annotators_cannot_list_gold_flags_or_response_sources(world, api_client):
    project, users = world
    annotator = api_client(users["annotator"])
    for name in ("tasks", "responses"):
        response = annotator.get(f"/api/projects/{project.slug}/{name}/")
        assert response.status_code == 403, name
        assert "is_gold" not in response.content.decode() and "source" not in response.content.decode()
    assert "is_gold" in api_client(users["viewer"]).get(f"/api/projects/{project.slug}/tasks/").content.decode()


def test_quality_report_when_every_battle_is_within_one_source(world, api_client):
    """The seeded pair's two responses share one (empty) source: no leaderboard players. Was a 500."""
    project, users = world
    from labeling.models import Judgment

    assert Judgment.objects.filter(project=project).exists()
    response = api_client(users["admin"]).get(f"/api/projects/{project.slug}/quality/")
    assert response.status_code == 200, response.content
    assert response.json()["leaderboard"] == []
    board = api_client(users["admin"]).get(f"/api/projects/{project.slug}/quality/leaderboard/")
    assert board.status_code == 200 and board.json() == []


def test_quality_lists_and_bad_rounds(world, api_client):
    project, users = world
    admin = api_client(users["admin"])
    base = f"/api/projects/{project.slug}"
    assert admin.get(f"{base}/quality/leaderboard/?rounds=abc").status_code == 400
    assert admin.get(f"{base}/quality/leaderboard/?rounds=5000").status_code == 400
    assert admin.get(f"{base}/quality/consensus/?min_votes=1").json() == []  # a list (of pairs), as documented
    prompt = Prompt.objects.get(project=project, text="q")
    ratings = admin.get(f"{base}/prompts/{prompt.pk}/bradley-terry/").json()
    assert [set(r) for r in ratings] == [{"response_id", "rating"}] * 2
