"""Exports with a label model: the posterior as a column of the pair formats (JSONL on Postgres's and
Python's paths, Parquet, the HF folder), refusals, and excluded annotators left out of every format."""
import io
import json
import zipfile

import pyarrow.parquet as pq
import pytest
from django.core.exceptions import ValidationError

from labeling.selectors.exports import ExportFilters
from labeling.services.annotators import annotator_exclude
from labeling.services.exports import preferences_export
from labeling.services.label_models import label_model_fit
from tests.labeling.judging import export, ids, judge, tasks_with_responses

pytestmark = pytest.mark.django_db


@pytest.fixture
def crowd(project_factory, member, make_user):
    """q1: ann and bob prefer "good", cid (a contrarian) "bad"; q2: ann prefers "fine", cid "worse"."""
    project = project_factory(mode="pairwise")
    t1, t2 = tasks_with_responses(project, {
        "q1": [{"text": "good", "source": "m1"}, {"text": "bad", "source": "m2"}],
        "q2": [{"text": "fine", "source": "m1"}, {"text": "worse", "source": "m1"}],
    })
    ann, bob, cid = (member(project, "annotator") for _ in range(3))
    judge(t1, ann, [[0], [1]])
    judge(t1, bob, [[0], [1]])
    judge(t1, cid, [[1], [0]])
    judge(t2, ann, [[0], [1]])
    judge(t2, cid, [[1], [0]])
    project.crowd = (ann, bob, cid)
    project.admin = member(project, "admin")
    return project


def rows(project, fmt="trl", **filters):
    return [json.loads(line) for line in export(project, fmt, **filters).decode().splitlines()]


def test_each_pair_carries_its_posterior_turned_to_chosen_over_rejected(crowd):
    fit = label_model_fit(project_id=crowd.pk)
    out = rows(crowd, label_model="majority")
    assert [(r["prompt"], r["chosen"], r["label_posterior"]) for r in out] == [
        ("q1", "good", pytest.approx(2 / 3, abs=1e-6)), ("q1", "good", pytest.approx(2 / 3, abs=1e-6)),
        ("q1", "bad", pytest.approx(1 / 3, abs=1e-6)), ("q2", "fine", 0.5), ("q2", "worse", 0.5)]
    ds = rows(crowd, "hh", label_model="dawid-skene")
    key = "-".join(map(str, sorted(ids(crowd.tasks.get(prompt__text="q1")))))
    assert ds[0]["label_posterior"] == pytest.approx(fit.posteriors[key]["dawid-skene"], abs=1e-6)
    assert ds[0]["label_posterior"] + ds[2]["label_posterior"] == pytest.approx(1.0, abs=1e-6)
    assert "label_posterior" not in rows(crowd)[0]  # none: the records are as they always were


def test_parquet_and_the_hf_folder_have_the_column(crowd):
    label_model_fit(project_id=crowd.pk)
    out = io.BytesIO()
    preferences_export(project=crowd, fmt="parquet", filters=ExportFilters.from_dict({"label_model": "majority"}), out=out)
    table = pq.read_table(io.BytesIO(out.getvalue()))
    assert table.column_names == ["id", "prompt", "chosen", "rejected", "label_posterior"]
    assert table.column("label_posterior").to_pylist()[3] == 0.5
    out = io.BytesIO()
    preferences_export(project=crowd, fmt="hf", filters=ExportFilters.from_dict({"label_model": "majority"}), out=out)
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as archive:
        parquet = [n for n in archive.namelist() if n.endswith(".parquet")]
        columns = {c for name in parquet for c in pq.read_table(io.BytesIO(archive.read(name))).column_names}
    assert "label_posterior" in columns


def test_a_label_model_is_refused_without_a_fit_and_for_formats_without_pairs(crowd, api_client):
    with pytest.raises(ValidationError) as no_fit:
        export(crowd, "trl", label_model="dawid-skene")
    assert "label_model" in no_fit.value.message_dict
    label_model_fit(project_id=crowd.pk)
    client = api_client(crowd.admin)
    base = f"/api/projects/{crowd.slug}/exports/stream/?format="
    assert client.get(base + "ranked&label_model=majority").status_code == 400
    assert client.get(base + "csv&label_model=majority").status_code == 400
    bad = client.get(base + "trl&label_model=glad")
    assert bad.status_code == 400 and "label_model" in bad.json()
    ok = client.get(base + "trl&label_model=position-em")
    assert ok.status_code == 200 and all("label_posterior" in json.loads(x) for x in b"".join(ok.streaming_content).splitlines())


def test_an_excluded_annotator_exports_nothing_in_any_format_and_nothing_is_deleted(crowd):
    ann, bob, cid = crowd.crowd
    before = crowd.judgments.count()
    annotator_exclude(project=crowd, user=cid, by=crowd.admin, reason="contrarian")
    assert [(r["prompt"], r["chosen"]) for r in rows(crowd)] == [("q1", "good"), ("q1", "good"), ("q2", "fine")]
    assert len(rows(crowd, "judgments")) == 3 and len(rows(crowd, "ranked")) == 3
    assert crowd.judgments.count() == before
