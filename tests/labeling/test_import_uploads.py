"""Uploads are limited in type and size: by file name, by content (binary data, gzip that is not)
and by bytes after decompression, in the import service, the API (400 with a field error) and the
admin upload page (400 with the error on the file field)."""
from __future__ import annotations

import gzip
import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from labeling.models import Membership, Prompt
from labeling.services.imports import DataImportError, project_data_import

pytestmark = pytest.mark.django_db
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
ROWS = b'{"id": "a", "prompt": "one"}\n{"id": "b", "prompt": "two"}\n'


def run(project, data: bytes, filename: str, **kw):
    return project_data_import(project=project, stream=io.BytesIO(data), filename=filename, **kw)


def refusal(project, data: bytes, filename: str, **kw) -> str:
    with pytest.raises(DataImportError) as caught:
        run(project, data, filename, **kw)
    issue = caught.value.issues[0]
    assert (issue.line, issue.field) == (0, "file")
    assert not Prompt.objects.filter(project=project).exists()
    return issue.message


@pytest.mark.parametrize("filename", ["data.txt", "photo.png", "data.jsonl.exe", "README", "x.png.gz", "data.gz"])
def test_names_other_than_jsonl_json_csv_are_refused(project_factory, filename):
    assert "must be a .jsonl, .json or .csv file (optionally .gz)" in refusal(project_factory(), ROWS, filename)


@pytest.mark.parametrize(("data", "filename"), [
    (PNG, "data.jsonl"),
    (PNG, "data.csv"),
    (b"prompt\nfine\nbad\x00row\n", "data.csv"),
    (ROWS + b"\x00" * 10, "data.jsonl"),
    (gzip.compress(PNG), "data.jsonl.gz"),
])
def test_binary_content_is_refused(project_factory, data, filename):
    assert "is binary" in refusal(project_factory(), data, filename)


def test_gzip_is_checked_by_content(project_factory):
    project = project_factory()
    assert refusal(project, ROWS, "data.jsonl.gz") == "is named .gz but does not hold gzip data"
    assert "unreadable" in refusal(project, b"\x1f\x8b" + b"garbage" * 20, "data.jsonl.gz")
    assert "unreadable" in refusal(project, gzip.compress(ROWS * 50)[:60], "data.jsonl.gz")  # truncated
    assert run(project, gzip.compress(ROWS), "data.jsonl").prompts == 2  # gzip data under a plain name is sniffed


def test_size_is_checked_before_reading_and_after_decompression(project_factory):
    project = project_factory()
    upload = SimpleUploadedFile("data.jsonl", ROWS * 100)
    assert "larger than the limit of 1000 bytes" in refusal_stream(project, upload, max_bytes=1000)
    bomb = gzip.compress(b'{"prompt": "' + b"a" * 200_000 + b'"}\n')
    assert len(bomb) < 1000
    assert "larger than the limit of 10000 bytes" in refusal(project, bomb, "data.jsonl.gz", max_bytes=10_000)


def refusal_stream(project, upload, **kw) -> str:
    with pytest.raises(DataImportError) as caught:
        project_data_import(project=project, stream=upload, filename=upload.name, **kw)
    return caught.value.issues[0].message


def test_json_arrays_and_json_lines_are_both_read(project_factory):
    project = project_factory()
    array = json.dumps([{"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two"}], indent=2).encode()
    assert run(project, array, "data.json").prompts == 2
    assert run(project, b'{"id": "c", "prompt": "three"}\n', "more.JSON").prompts == 1
    assert run(project, gzip.compress(b'[{"id": "d", "prompt": "four"}]'), "more.json.gz").prompts == 1


def test_json_array_errors_name_the_line_a_record_starts_on(project_factory):
    project = project_factory()
    text = '[\n  {"id": "a", "prompt": "one"},\n  {"id": "b", "prompt": ""},\n  {"id": "c", "prompt": "x"}\n  {"id": "d"}\n]'
    with pytest.raises(DataImportError) as caught:
        run(project, text.encode(), "data.json")
    assert [(i.line, i.field) for i in caught.value.issues] == [(3, "prompt"), (5, "json")]
    with pytest.raises(DataImportError, match="contains no records"):
        run(project, b" [ ] ", "data.json")


# --- the API and the admin page -----------------------------------------------------------------

@pytest.fixture
def project_admin(project_factory, member):
    project = project_factory()
    return project, member(project, Membership.Role.ADMIN)


def api_upload(api_client, project, user, name: str, data: bytes):
    return api_client(user).post(f"/api/projects/{project.slug}/imports/",
                                 {"file": SimpleUploadedFile(name, data)}, format="multipart")


@pytest.mark.parametrize(("name", "data", "message"), [
    ("evil.exe", ROWS, "must be a .jsonl, .json or .csv file"),
    ("data.jsonl", PNG, "is binary"),
    ("data.jsonl.gz", ROWS, "is named .gz but does not hold gzip data"),
    ("data.jsonl", ROWS * 20, "larger than the limit of 500 bytes"),
])
def test_api_refuses_with_a_field_error(project_admin, api_client, settings, name, data, message):
    settings.PAIRWISE_MAX_IMPORT_BYTES = 500
    project, admin = project_admin
    response = api_upload(api_client, project, admin, name, data)
    assert response.status_code == 400
    assert message in response.json()["file"][0]
    assert not Prompt.objects.filter(project=project).exists()


def test_api_refuses_a_body_over_the_limit_by_its_length(project_admin, api_client, settings):
    settings.PAIRWISE_MAX_IMPORT_BYTES = 1000
    project, admin = project_admin
    response = api_upload(api_client, project, admin, "data.jsonl", b"x" * (1024 * 1024 + 2000))
    assert response.status_code == 400 and "larger than the limit of 1000 bytes" in response.json()["file"][0]
    assert api_upload(api_client, project, admin, "data.jsonl", ROWS).status_code == 201


@pytest.mark.parametrize(("name", "data", "message"), [
    ("evil.exe", ROWS, "must be a .jsonl, .json or .csv file"),
    ("data.csv", PNG, "is binary"),
    ("data.jsonl", ROWS * 20, "larger than the limit of 500 bytes"),
])
def test_admin_upload_refuses_with_a_field_error(project_admin, settings, name, data, message):
    settings.PAIRWISE_MAX_IMPORT_BYTES = 500
    project, admin = project_admin
    admin.is_staff = admin.is_superuser = True
    admin.save()
    client = Client()
    client.force_login(admin)
    response = client.post(f"/admin/labeling/project/{project.pk}/import/", {"file": SimpleUploadedFile(name, data)})
    assert response.status_code == 400
    assert message in " ".join(response.context["form"].errors["file"])
    assert not Prompt.objects.filter(project=project).exists()
