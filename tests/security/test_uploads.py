"""Uploads without a bound (issue 24, point 5), each refused with a 400 on the `file` field: a gzip bomb
posted by a viewer to the reward-evaluation API, zip archives whose members (.gz ones included) add
up past the budget, a request whose declared size is over it (refused before a byte is read), and
JSON nested deeper than the parser's stack in an import and in an evaluation file."""
from __future__ import annotations

import gzip
import io
import json
import tracemalloc
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.conf import settings as django_settings
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from labeling.models import Membership, Prompt
from training.models import ModelVersion

pytestmark = pytest.mark.django_db
MB = 1024 * 1024
LINE = b'{"id": "%d", "prompt": "question %d?", "chosen": "a good answer", "rejected": "a bad one"}\n'


def pairs(start: int, size: int) -> bytes:
    """Preference lines from `start` until `size` bytes."""
    out, n = [], start
    while sum(map(len, out)) < size:
        out.append(LINE % (n, n))
        n += 1
    return b"".join(out)


@pytest.fixture
def reward(project_factory, member, tmp_path):
    """A reward version (never loaded: every refusal here comes before scoring) and a viewer of its project."""
    project = project_factory()
    version = ModelVersion.objects.create(project=project, kind=ModelVersion.Kind.REWARD, name="r", base="b",
                                          artifact_path=str(tmp_path / "model"))
    url = reverse("api-training-version-evaluate", kwargs={"slug": project.slug, "version_id": version.pk})
    return url, member(project, Membership.Role.VIEWER)


def test_a_gzip_bomb_posted_by_a_viewer_stops_at_the_budget_without_inflating(reward, api_client, settings):
    settings.PAIRWISE_MAX_EVAL_UPLOAD_BYTES = MB
    url, viewer = reward
    bomb = gzip.compress(b"\x00" * (40 * MB), 9)
    assert len(bomb) < 100 * 1024
    tracemalloc.start()
    try:
        response = api_client(viewer).post(url, {"file": SimpleUploadedFile("pairs.jsonl.gz", bomb)}, format="multipart")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 400, response.content
    assert response.json() == {"file": f"pairs.jsonl.gz: file is larger than the limit of {MB} bytes"}
    assert peak < 8 * MB  # read a chunk at a time: the 40 MB were never held


def zipped(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


@pytest.fixture
def importer(project_factory, member, api_client):
    project = project_factory()
    client = api_client(member(project, Membership.Role.ADMIN))

    def post(name: str, data: bytes):
        return client.post(f"/api/projects/{project.slug}/imports/", {"file": SimpleUploadedFile(name, data)},
                           format="multipart")
    post.project = project
    return post


@pytest.mark.parametrize("members", [
    pytest.param(lambda: {"a.jsonl.gz": gzip.compress(pairs(0, 60_000)), "b.jsonl.gz": gzip.compress(pairs(10**6, 60_000))},
                 id="gz-members-together"),
    pytest.param(lambda: {"a.jsonl": pairs(0, 60_000), "b.jsonl.gz": gzip.compress(pairs(10**6, 60_000))},
                 id="a-gz-member-beside-a-plain-one"),
])
def test_zip_members_share_one_budget_counted_after_decompression(importer, settings, members):
    """Each member is under the budget and the archive far under it; together, inflated, they are over."""
    settings.PAIRWISE_MAX_IMPORT_BYTES = 100_000
    archive = zipped(members())
    assert len(archive) < 20_000
    response = importer("dataset.zip", archive)
    assert response.status_code == 400, response.content
    assert response.json()["file"] == ["file is larger than the limit of 100000 bytes"]
    assert not Prompt.objects.filter(project=importer.project).exists()
    settings.PAIRWISE_MAX_IMPORT_BYTES = 200_000
    assert importer("dataset.zip", archive).status_code == 201  # the same archive within a larger budget


class Tripwire(io.BytesIO):
    """A request body that remembers whether anything read it."""
    touched = False

    def read(self, *args):
        self.touched = True
        return super().read(*args)


def post_declaring(client, url: str, declared: int) -> tuple[object, Tripwire]:
    body = Tripwire(b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\n\r\n{}\r\n--x--\r\n")
    response = client.generic("POST", url, **{"wsgi.input": body, "CONTENT_LENGTH": str(declared),
                                              "CONTENT_TYPE": "multipart/form-data; boundary=x"})
    return response, body


def with_csrf_cookie(client):
    """A CSRF cookie of the right shape, so the CSRF check goes on to read the form's token."""
    client.cookies[django_settings.CSRF_COOKIE_NAME] = "a" * 32
    return client


def test_a_request_declaring_more_than_the_budget_is_refused_before_it_is_read(reward, importer, project_factory,
                                                                               member, api_client, settings):
    settings.PAIRWISE_MAX_EVAL_UPLOAD_BYTES = MB
    url, viewer = reward
    response, body = post_declaring(api_client(viewer), url, 3 * MB)
    assert response.status_code == 400 and "larger than the limit of 1048576 bytes" in response.json()["file"][0]
    assert not body.touched

    # An import with session authentication: its CSRF check would parse the whole form first.
    settings.PAIRWISE_MAX_IMPORT_BYTES, settings.PAIRWISE_MAX_EVAL_UPLOAD_BYTES = MB, 10 * MB
    project = project_factory()
    browser = with_csrf_cookie(APIClient(enforce_csrf_checks=True))
    browser.force_login(member(project, Membership.Role.ADMIN))
    response, body = post_declaring(browser, f"/api/projects/{project.slug}/imports/", 3 * MB)
    assert response.status_code == 400 and "larger than the limit of 1048576 bytes" in response.json()["file"][0]
    assert not body.touched


DEEP = "[" * 100_000


@pytest.mark.parametrize(("name", "data", "line"), [
    ("deep.jsonl", '{"prompt": "fine"}\n' + DEEP + "\n", 2),
    ("deep.jsonl.gz", gzip.compress(('{"prompt": "fine"}\n\n' + '{"prompt": ' + DEEP).encode()), 3),
    ("deep.json", '[\n{"prompt": "fine"},\n{"prompt": "x", "metadata": ' + DEEP + "\n]", 3),
])
def test_deeply_nested_json_in_an_import_is_a_400_naming_the_line(importer, name, data, line):
    response = importer(name, data.encode() if isinstance(data, str) else data)
    assert response.status_code == 400, response.content
    [error] = response.json()["errors"]
    assert (error["line"], error["field"]) == (line, "json") and "nested deeper than" in error["message"]
    assert f"line {line}" in error["message"]
    assert not Prompt.objects.filter(project=importer.project).exists()


def test_deeply_nested_json_in_an_evaluation_file_is_a_400_naming_the_line(reward, api_client):
    url, viewer = reward
    lines = [json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}), "", DEEP]
    upload = SimpleUploadedFile("deep.jsonl", "\n".join(lines).encode())
    response = api_client(viewer).post(url, {"file": upload}, format="multipart")
    assert response.status_code == 400, response.content
    assert response.json() == {"file": "deep.jsonl:3: not JSON (nested deeper than 100 levels)"}


def test_deeply_nested_json_in_an_api_body_is_a_400(reward, project_factory, member, api_client):
    url, viewer = reward
    response = api_client(viewer).post(url, data=f'{{"records": {DEEP}}}', content_type="application/json")
    assert response.status_code == 400 and "nested too deeply" in response.json()["detail"]
    project = project_factory()
    runs = reverse("api-training-runs", kwargs={"slug": project.slug})  # any API: the parser is the default
    response = api_client(member(project, Membership.Role.ADMIN)).post(
        runs, data='{"kind": "reward", "config": ' + DEEP, content_type="application/json")
    assert response.status_code == 400 and "nested too deeply" in response.json()["detail"]


def test_a_form_declaring_more_than_any_budget_is_refused_before_the_csrf_check_reads_it(project_factory, member,
                                                                                         settings, tmp_path):
    """The reward version page's scoring form (and every other page): CsrfViewMiddleware parses a POST's
    form before the view runs, so the size is checked before it."""
    settings.PAIRWISE_MAX_IMPORT_BYTES = settings.PAIRWISE_MAX_EVAL_UPLOAD_BYTES = MB
    project = project_factory()
    version = ModelVersion.objects.create(project=project, kind=ModelVersion.Kind.REWARD, name="r", base="b",
                                          artifact_path=str(tmp_path / "model"))
    browser = with_csrf_cookie(Client(enforce_csrf_checks=True))
    browser.force_login(member(project, Membership.Role.ADMIN))
    url = reverse("training-version-score-file", kwargs={"slug": project.slug, "version_id": version.pk})
    response, body = post_declaring(browser, url, 3 * MB)
    assert response.status_code == 413 and b"larger than the limit of 1048576 bytes" in response.content
    assert not body.touched
    response, body = post_declaring(browser, url, 1000)
    assert response.status_code == 403 and body.touched  # within the limit: read, and refused for its missing token
