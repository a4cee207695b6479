"""Real data imports as it is: hh-rlhf's whitespace-only answers are kept, and the opt-in
skip_invalid mode writes the valid records and reports the rest (service, API, command)."""
from __future__ import annotations

import gzip
import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from labeling.models import ImportBatch, Membership, PreferencePair, Prompt, Response
from labeling.services.imports import DataImportError, project_data_import
from tests.paths import SHARED_DATASETS

pytestmark = pytest.mark.django_db
HH_TEST = SHARED_DATASETS / "hh-rlhf" / "helpful-base-test.jsonl.gz"
GOOD = {"id": "g1", "prompt": "q", "chosen": "yes", "rejected": "no"}
MIXED = [GOOD, {"id": "b1", "prompt": "", "chosen": "a", "rejected": "b"}, "{broken", {"id": "g2", "prompt": "q2", "chosen": " ", "rejected": "x"},
         {"id": "b2", "prompt": "q3", "chosen": 7, "rejected": "x"}]


def jsonl(*rows) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def run(project, data: bytes, filename="data.jsonl", **kw):
    return project_data_import(project=project, stream=io.BytesIO(data), filename=filename, **kw)


def test_the_whole_hh_rlhf_helpful_base_test_file_imports(project_factory):
    # No skip: the shared file must be there (tests/paths.py); a missing file fails this test.
    lines = sum(1 for _ in gzip.open(HH_TEST, "rt", encoding="utf-8"))
    project = project_factory(mode="pairwise")
    with HH_TEST.open("rb") as f:
        result = project_data_import(project=project, stream=f, filename=HH_TEST.name)
    assert lines == 2343 and result.judgments == lines and result.skipped_invalid == 0
    blank = Response.objects.filter(prompt__project=project, text=" ")
    assert blank.count() == 4  # kept as they are: a single space
    assert PreferencePair.objects.filter(project=project).count() == result.pairs


@pytest.mark.parametrize("record,field", [
    ({"id": "x", "prompt": "q", "chosen": "", "rejected": "b"}, "chosen"),  # empty is missing, not blank
    ({"id": "x", "prompt": "   ", "chosen": "a", "rejected": "b"}, "prompt"),
    ({"id": "x", "prompt": "q", "rejected": "b", "chosen": None}, "chosen"),
    ({"prompt": "q", "responses": ["a", "\t"], "demonstration": " "}, "demonstration"),
])
def test_truly_malformed_records_are_still_refused(project_factory, record, field):
    with pytest.raises(DataImportError) as caught:
        run(project_factory(), jsonl(record))
    assert caught.value.issues[0].field == field


def test_whitespace_responses_of_an_open_task_are_kept(project_factory):
    result = run(project_factory(responses_per_task=2), jsonl({"prompt": "q", "responses": ["fine", "  "]}))
    assert result.tasks == 1 and Response.objects.filter(text="  ").exists()


def test_skip_invalid_writes_the_valid_records_and_reports_each_other_line(project_factory):
    project = project_factory(mode="pairwise")
    with pytest.raises(DataImportError):
        run(project, jsonl(*MIXED))  # the default stays all or nothing
    assert not Prompt.objects.filter(project=project).exists()
    result = run(project, jsonl(*MIXED), skip_invalid=True)
    assert (result.judgments, result.skipped_invalid) == (2, 3)
    assert [(r.line, r.field) for r in result.rejects] == [(2, "prompt"), (3, "json"), (5, "chosen")]
    assert result.rejects[1].raw == "{broken" and json.loads(result.rejects[2].raw)["id"] == "b2"
    batch = ImportBatch.objects.get(pk=result.batch_id)
    assert batch.created["skipped_invalid"] == 3 and [r["line"] for r in batch.created["rejects"]] == [2, 3, 5]


def test_skip_invalid_still_fails_a_file_that_cannot_be_read_or_has_no_valid_record(project_factory):
    project = project_factory()
    with pytest.raises(DataImportError, match="not UTF-8"):
        run(project, b"\xff\xfe", skip_invalid=True)
    with pytest.raises(DataImportError) as caught:
        run(project, jsonl({"prompt": ""}, {"nope": 1}), skip_invalid=True)
    assert [i.line for i in caught.value.issues] == [1, 2]
    assert not ImportBatch.objects.filter(project=project).exists()


def test_api_skip_invalid_as_form_field_or_query_param(project_factory, member, api_client):
    project = project_factory(mode="pairwise")
    client = api_client(member(project, Membership.Role.ADMIN))
    url = f"/api/projects/{project.slug}/imports/"
    refused = client.post(url, {"file": SimpleUploadedFile("d.jsonl", jsonl(*MIXED))}, format="multipart")
    assert refused.status_code == 400 and {e["line"] for e in refused.json()["errors"]} == {2, 3, 5}
    done = client.post(url, {"file": SimpleUploadedFile("d.jsonl", jsonl(*MIXED)), "skip_invalid": "true"},
                       format="multipart")
    assert done.status_code == 201, done.json()
    body = done.json()
    assert body["judgments"] == 2 and body["skipped_invalid"] == 3
    assert body["rejects"][0] == {"line": 2, "field": "prompt", "message": "must be a non-empty string",
                                  "raw": json.dumps(MIXED[1])}
    again = client.post(f"{url}?skip_invalid=true", {"file": SimpleUploadedFile("d.jsonl", jsonl(*MIXED))},
                        format="multipart")
    assert again.status_code == 201 and again.json()["skipped_duplicates"] == 2
    bad = client.post(url, {"file": SimpleUploadedFile("d.jsonl", jsonl(GOOD)), "format": "excel"}, format="multipart")
    assert bad.status_code == 400 and "format" in bad.json()


def test_command_skip_invalid_writes_the_rejects_file(tmp_path, capsys):
    data = tmp_path / "mixed.jsonl"
    data.write_bytes(jsonl(*MIXED))
    with pytest.raises(CommandError, match=r"mixed.jsonl:2: prompt"):
        call_command("import_project_data", str(data), project="skip", create=True, mode="pairwise")
    rejects = tmp_path / "rejects.jsonl"
    call_command("import_project_data", str(data), project="skip", skip_invalid=True, rejects=rejects)
    out = capsys.readouterr().out
    assert "judgments 2" in out and f"skipped 3 invalid lines, written to {rejects}" in out
    rows = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["line"], r["field"]) for r in rows] == [(2, "prompt"), (3, "json"), (5, "chosen")]
    assert rows[1]["message"].startswith("invalid JSON") and rows[1]["raw"] == "{broken"
