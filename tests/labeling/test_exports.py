"""Every export format and filter, permissions, streaming, round trip and snapshots."""
import csv
import gzip
import hashlib
import io
import json
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.http import StreamingHttpResponse
from django.utils import timezone

from labeling.models import DatasetSnapshot, Judgment, PreferencePair, Prompt, Response
from labeling import export_records, splits
from labeling.selectors import exports as export_selectors
from labeling.selectors.exports import ExportFilters, annotator_pseudonym
from labeling.services import exports
from labeling.services.exports import dataset_snapshot_create
from tests.paths import SHARED_DATASETS
from tests.labeling.judging import export, ids, import_rows, judge, tasks_with_responses

pytestmark = pytest.mark.django_db
SHARED = SHARED_DATASETS


def lines(project, fmt="trl", **filters) -> list[dict]:
    return [json.loads(line) for line in export(project, fmt, **filters).decode().splitlines()]


def triples(project, **filters) -> list[tuple[str, str, str]]:
    return [(r["prompt"], r["chosen"], r["rejected"]) for r in lines(project, "trl", **filters)]


@pytest.fixture
def voted(project_factory, make_user, settings, tmp_path):
    """Two prompts judged by three annotators: q1 has a 2-1 majority for "good", q2 is unanimous for "fine"."""
    settings.PAIRWISE_EXPORTS_DIR = tmp_path
    project = project_factory(mode="pairwise")
    t1, t2 = tasks_with_responses(project, {
        "q1": [{"text": "good", "source": "m1"}, {"text": "bad", "source": "m2"}],
        "q2": [{"text": "fine", "source": "m1"}, {"text": "worse", "source": "m1"}],
    })
    ann, bob, cid = make_user("ann"), make_user("bob"), make_user("cid")
    judge(t1, ann, [[0], [1]], likert={str(ids(t1)[0]): 6}, flags={str(ids(t1)[1]): ["hallucination"]})
    judge(t1, bob, [[0], [1]])
    judge(t1, cid, [[1], [0]])
    for user in (ann, bob, cid):
        judge(t2, user, [[0], [1]])
    return project


def test_trl_is_prompt_chosen_rejected_per_pair(voted):
    rows = lines(voted)
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [
        ("q1", "good", "bad"), ("q1", "good", "bad"), ("q1", "bad", "good"),
        ("q2", "fine", "worse"), ("q2", "fine", "worse"), ("q2", "fine", "worse")]
    assert set(rows[0]) == {"id", "prompt", "chosen", "rejected"}


def test_trl_chat_hh_and_chat_prompts(project_factory, make_user):
    project = project_factory(mode="pairwise")
    import_rows(project, {"messages": [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"}],
                          "responses": ["hello", "go away"]})
    import_rows(project, {"id": "hh/1", "prompt": "\n\nHuman: hey\n\nAssistant:", "chosen": " yo", "rejected": " no"})
    chat_task = Prompt.objects.get(messages__isnull=False).tasks.get()
    judge(chat_task, make_user(), [[0], [1]])
    chat = lines(project, "trl-chat")  # the imported pair came first
    assert chat[1]["prompt"] == [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"}]
    assert chat[0]["prompt"] == [{"role": "user", "content": "\n\nHuman: hey\n\nAssistant:"}]
    assert chat[0]["chosen"] == [{"role": "assistant", "content": " yo"}]
    assert chat[1]["chosen"] == [{"role": "assistant", "content": "hello"}]
    assert chat[1]["rejected"] == [{"role": "assistant", "content": "go away"}]
    hh = lines(project, "hh")
    assert hh[0] == {"id": hh[0]["id"], "chosen": "\n\nHuman: hey\n\nAssistant: yo",
                     "rejected": "\n\nHuman: hey\n\nAssistant: no"}
    assert hh[1]["chosen"] == "\n\nSystem: be kind\n\nHuman: hi\n\nAssistant: hello"
    assert lines(project, "trl")[1]["prompt"] == "\n\nSystem: be kind\n\nHuman: hi\n\nAssistant:"


@pytest.mark.postgres_only
def test_postgres_sql_path_matches_python_path(voted, project_factory, make_user, monkeypatch):
    """The JSON Postgres builds for COPY must equal what the portable path builds in Python."""
    import_rows(voted, {"messages": [{"role": "user", "content": 'quote " and \\ and \n and \x01 é'}],
                        "responses": ["a\tb", "c"]})
    task = voted.tasks.order_by("-id").first()
    judge(task, make_user(), [[1], [0]])
    sql_side = {fmt: lines(voted, fmt) for fmt in ("trl", "trl-chat", "hh")}
    monkeypatch.setattr(exports, "on_postgres", lambda: False)
    for fmt, rows in sql_side.items():
        assert rows == lines(voted, fmt), fmt
    assert sql_side["trl"][-1]["prompt"] == '\n\nHuman: quote " and \\ and \n and \x01 é\n\nAssistant:'


@pytest.mark.postgres_only
@pytest.mark.parametrize("path", ["copy", "stream"])
def test_sql_exports_leave_the_callers_planner_settings_alone(voted, tmp_path, path):
    """The ordered-plan setting must end with the export: the test transaction, like any caller's,
    goes on after it (with sorts disabled every later query cost 1e10 and paid for JIT)."""
    from django.db import connection

    if path == "copy":
        exports.export_to_file(project=voted, fmt="trl", filters=ExportFilters(), path=tmp_path / "out.jsonl")
    else:
        assert b"".join(data for data, _ in exports.export_chunks(project=voted, fmt="trl", filters=ExportFilters()))
    with connection.cursor() as cursor:
        cursor.execute("SHOW enable_sort")
        assert cursor.fetchone() == ("on",)


def test_ranked_has_tie_groups_likert_flags_and_pseudonymous_annotators(project_factory, make_user):
    project = project_factory(mode="rank", responses_per_task=3)
    (task,) = tasks_with_responses(project, {"q": ["r0", "r1", "r2"]})
    ann = make_user("ann")
    r0, r1, r2 = ids(task)
    judge(task, ann, [[2], [0, 1]], likert={str(r2): 7}, flags={str(r0): ["harmful_advice"]})
    (row,) = lines(project, "ranked")
    assert row["ranking"] == [[r2], [r0, r1]]
    assert [(r["text"], r["rank"]) for r in row["responses"]] == [("r2", 0), ("r0", 1), ("r1", 1)]
    assert row["responses"][0]["likert"] == 7 and row["responses"][1]["flags"] == ["harmful_advice"]
    assert row["annotator"] == annotator_pseudonym(ann.pk) != "ann" and row["prompt"] == "q"
    assert lines(project, "ranked", pseudonymous=False)[0]["annotator"] == "ann"


def test_judgments_raw_one_line_per_judgment(voted):
    rows = lines(voted, "judgments")
    assert len(rows) == 6 and {r["source"] for r in rows} == {"human"}
    assert rows[0]["likert"] and rows[0]["flags"] and "ranking" in rows[0] and "time_spent_ms" in rows[0]
    assert {r["annotator"] for r in rows} == {annotator_pseudonym(u.pk) for u in User.objects.all()}


def test_parquet_of_trl(voted):
    table = pq.read_table(io.BytesIO(export(voted, "parquet")))
    assert table.column_names == ["id", "prompt", "chosen", "rejected"]
    assert list(zip(*(table.column(c).to_pylist() for c in ("prompt", "chosen", "rejected")))) == triples(voted)


def test_csv_has_header_sources_and_pseudonyms(voted):
    rows = list(csv.DictReader(io.StringIO(export(voted, "csv").decode())))
    assert len(rows) == 6 and rows[0]["chosen"] == "good" and rows[0]["chosen_source"] == "m1"
    assert rows[0]["annotator"].startswith("a_") and rows[0]["judgment_source"] == "human"


def test_superseded_judgments_are_left_out(voted, make_user):
    first = Judgment.objects.filter(project=voted, annotator__username="cid", task__prompt__text="q1").get()
    judge(first.task, first.annotator, [[0], [1]], supersedes=first)
    assert triples(voted).count(("q1", "good", "bad")) == 3 and ("q1", "bad", "good") not in triples(voted)


def test_date_range(voted):
    old = Judgment.objects.filter(project=voted, annotator__username="ann")
    old.update(created_at=timezone.now() - timedelta(days=10))
    today = timezone.localdate()
    assert len(triples(voted, date_to=str(today - timedelta(days=5)))) == 2
    assert len(triples(voted, date_from=str(today - timedelta(days=1)))) == 4
    assert len(triples(voted, date_from=today, date_to=today)) == 4


def test_annotator_and_judgment_source(voted):
    assert triples(voted, annotator="cid") == [("q1", "bad", "good"), ("q2", "fine", "worse")]
    import_rows(voted, {"id": "x/1", "prompt": "imp", "chosen": "c", "rejected": "r", "source": "hh"})
    assert triples(voted, judgment_source="hh") == [("imp", "c", "r")]
    assert len(triples(voted, judgment_source="human")) == 6


def test_response_source_and_model_version(voted):
    from training.models import ModelVersion

    assert {t[0] for t in triples(voted, sources="m1")} == {"q2"}
    assert {t[0] for t in triples(voted, sources=["m1", "m2"])} == {"q1", "q2"}
    version = ModelVersion.objects.create(project=voted, kind="policy", name="v1", base="b", artifact_path="x")
    Response.objects.filter(text__in=["fine", "worse"]).update(model_version=version)
    assert {t[0] for t in triples(voted, model_versions=[version.pk])} == {"q2"}
    assert {r["prompt"] for r in lines(voted, "ranked", sources="m1")} == {"q2"}


def test_consensus_and_min_agreement(voted, make_user):
    assert triples(voted, consensus="majority") == [("q1", "good", "bad"), ("q2", "fine", "worse")]
    assert triples(voted, consensus="unanimous") == [("q2", "fine", "worse")]
    assert len(triples(voted, min_agreement=0.9)) == 3  # every q2 row
    assert len(triples(voted, min_agreement=0.6)) == 5  # q1's 2/3 majority rows and q2
    # A tie is a vote: one more annotator tying q1 leaves "good" 2 of 4, no strict majority.
    judge(voted.tasks.get(prompt__text="q1"), make_user(), [[0, 1]])
    assert triples(voted, consensus="majority") == [("q2", "fine", "worse")]


def test_gold_excluded(project_factory, make_user):
    project = project_factory(mode="pairwise")
    import_rows(project, {"prompt": "gold q", "responses": ["right", "wrong"], "gold_ranking": [[0], [1]]},
                {"prompt": "plain q", "responses": ["x", "y"]})
    for task in project.tasks.all():
        judge(task, make_user(), [[0], [1]])
    assert {t[0] for t in triples(project)} == {"gold q", "plain q"}
    assert {t[0] for t in triples(project, exclude_gold=True)} == {"plain q"}
    assert [r["prompt"] for r in lines(project, "ranked", exclude_gold=True)] == ["plain q"]


def test_split_is_deterministic_and_disjoint_by_prompt(project_factory):
    project = project_factory(mode="pairwise")
    import_rows(project, *({"id": f"r{i}", "prompt": f"p{i % 40}", "chosen": f"c{i}", "rejected": "r"}
                           for i in range(120)))
    train = triples(project, split="train", test_fraction=0.25)
    test = triples(project, split="test", test_fraction=0.25)
    assert len(train) + len(test) == 120 and test
    assert not {t[0] for t in train} & {t[0] for t in test}
    assert train == triples(project, split="train", test_fraction=0.25)
    prompt = Prompt.objects.get(project=project, text=test[0][0])
    assert splits.prompt_split(prompt.external_id, fraction=0.25) == "test"
    assert triples(project, split="test", test_fraction=0.25, split_seed="other") != test


def test_bad_filters_are_rejected():
    for bad in ({"consensus": "most"}, {"min_agreement": 2}, {"split": "dev"}, {"date_from": "May"},
                {"nope": 1}):
        with pytest.raises(ValidationError):
            ExportFilters.from_dict(bad)
    with pytest.raises(ValidationError):
        export_selectors.format_validate(fmt="ranked", filters=ExportFilters(consensus="majority"))
    with pytest.raises(ValidationError):
        export_selectors.format_validate(fmt="yaml", filters=ExportFilters())


def test_round_trip_trl_export_imports_to_the_same_pairs(project_factory, tmp_path):
    source = project_factory(mode="pairwise")
    with open(f"{SHARED}/llmbar/natural.jsonl.gz", "rb") as f:
        from labeling.services.imports import project_data_import
        project_data_import(project=source, stream=f, filename="natural.jsonl.gz")
    data = export(source)
    target = project_factory(mode="pairwise")
    from labeling.services.imports import project_data_import
    result = project_data_import(project=target, stream=io.BytesIO(data), filename="export.jsonl")

    def pairs(project):
        return sorted(PreferencePair.objects.filter(project=project).values_list(
            "prompt__text", "chosen__text", "rejected__text"))

    with gzip.open(f"{SHARED}/llmbar/natural.jsonl.gz", "rt") as f:
        originals = sorted((r["prompt"], r["chosen"], r["rejected"]) for r in map(json.loads, f))
    assert result.pairs == 100 and pairs(target) == pairs(source) == originals


def test_snapshot_sha256_matches_file_and_manifest(voted, make_user):
    user = make_user("admin1")
    snapshot = dataset_snapshot_create(project=voted, fmt="trl", filters=ExportFilters(consensus="majority"),
                                       user=user)
    path = Path(snapshot.path)
    assert snapshot.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and snapshot.rows == 2
    manifest = json.loads(exports.manifest_path(snapshot=snapshot).read_text())
    assert manifest["sha256"] == snapshot.sha256 and manifest["rows"] == 2 and manifest["created_by"] == "admin1"
    assert manifest["filters"]["consensus"] == "majority" and snapshot.filters["consensus"] == "majority"
    assert manifest["created_at"] and DatasetSnapshot.objects.get().created_by == user


def test_management_command_to_file_and_snapshot(voted, tmp_path):
    out = tmp_path / "x.jsonl"
    call_command("export_preferences", "--project", voted.slug, "--format", "trl", "--output", str(out),
                 "--consensus", "unanimous")
    assert [json.loads(x)["prompt"] for x in out.read_text().splitlines()] == ["q2"]
    call_command("export_preferences", "--project", voted.slug, "--format", "parquet", "--snapshot")
    assert DatasetSnapshot.objects.get().rows == 6


# --- HTTP ------------------------------------------------------------------------------------

def url(project, **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"/api/projects/{project.slug}/exports/stream/?{query}"


@pytest.mark.parametrize("fmt", ["trl", "trl-chat", "hh", "ranked", "judgments", "csv", "parquet"])
def test_http_export_is_streamed_for_admins(voted, member, api_client, fmt):
    response = api_client(member(voted, "admin")).get(url(voted, format=fmt))
    assert response.status_code == 200 and response.streaming
    assert isinstance(response, StreamingHttpResponse)
    body = b"".join(response.streaming_content)
    assert body and export_records.extension(fmt) in response["Content-Disposition"]
    if fmt == "trl":
        assert [json.loads(x)["chosen"] for x in body.decode().splitlines()][0] == "good"


def test_http_export_filters_and_bad_input(voted, member, api_client):
    client = api_client(member(voted, "admin"))
    body = b"".join(client.get(url(voted, format="trl", consensus="unanimous")).streaming_content)
    assert [json.loads(x)["prompt"] for x in body.decode().splitlines()] == ["q2"]
    assert client.get(url(voted, format="trl", consensus="most")).status_code == 400
    assert client.get(url(voted, format="yaml")).status_code == 400


@pytest.mark.parametrize("role,status", [("annotator", 403), ("viewer", 403), (None, 404)])
def test_only_project_admins_export(voted, member, make_user, api_client, role, status):
    user = member(voted, role) if role else make_user()
    client = api_client(user)
    assert client.get(url(voted, format="trl")).status_code == status
    assert client.post(f"/api/projects/{voted.slug}/exports/jobs/", {"format": "trl"}, format="json").status_code == status
    assert client.get(f"/api/projects/{voted.slug}/snapshots/").status_code == status


def test_http_stream_refuses_large_exports(voted, member, api_client, settings):
    settings.PAIRWISE_EXPORT_STREAM_MAX_ROWS = 3
    response = api_client(member(voted, "admin")).get(url(voted, format="trl"))
    assert response.status_code == 413 and "jobs" in response.json()["detail"]


def test_http_snapshot_create_and_list(voted, member, api_client):
    client = api_client(member(voted, "admin"))
    created = client.post(f"/api/projects/{voted.slug}/snapshots/", {"format": "trl", "consensus": "majority"},
                          format="json")
    assert created.status_code == 201 and created.json()["rows"] == 2
    listed = client.get(f"/api/projects/{voted.slug}/snapshots/").json()
    assert [s["sha256"] for s in listed] == [created.json()["sha256"]]
