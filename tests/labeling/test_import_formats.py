"""Imports of what the field already has, each from a real file in that format: the product's own
exports (round trip), raw hh-rlhf transcripts, Hugging Face Parquet dataset folders, Label Studio
and Argilla exports. All of them end in the one write path, project_data_import."""
from __future__ import annotations

import gzip
import io
import json
import zipfile
from itertools import islice

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.management import call_command

from labeling.models import ComparisonTask, Judgment, PreferencePair
from labeling.services.imports import DataImportError, project_data_import
from tests.labeling.judging import export, judge, tasks_with_responses
from tests.paths import SHARED_DATASETS

pytestmark = pytest.mark.django_db
HH_TEST = SHARED_DATASETS / "hh-rlhf" / "helpful-base-test.jsonl.gz"


def run(project, data: bytes, filename: str, **kw):
    return project_data_import(project=project, stream=io.BytesIO(data), filename=filename, **kw)


def pairs(project) -> list[tuple[str, str]]:
    """(chosen, rejected) texts; an hh transcript puts one space before an answer, so compare stripped."""
    rows = PreferencePair.objects.filter(project=project).values_list("chosen__text", "rejected__text")
    return sorted((chosen.strip(), rejected.strip()) for chosen, rejected in rows)


@pytest.fixture
def judged(project_factory, make_user):
    project = project_factory(responses_per_task=3)
    tasks = tasks_with_responses(project, {"Write a haiku": ["a", "b", "c"], "Name a colour": ["red", "blue", "green"]})
    annotator = make_user()
    judge(tasks[0], annotator, [[2], [0, 1]])  # a tie: no pair between a and b
    judge(tasks[1], annotator, [[0], [1], [2]], shown=[2, 0, 1])
    return project


@pytest.mark.parametrize("fmt", ["trl", "trl-chat", "hh", "ranked", "judgments", "parquet"])
def test_own_exports_round_trip(judged, project_factory, fmt):
    data = export(judged, fmt)
    target = project_factory(responses_per_task=3)
    name = "export.parquet" if fmt == "parquet" else "export.jsonl"
    result = run(target, data, name)  # the format is detected
    assert len(pairs(judged)) == 5 and pairs(target) == pairs(judged)
    assert ComparisonTask.objects.filter(project=target, status="complete").count() == result.tasks
    chosen_fmt = "auto" if fmt == "parquet" else fmt
    assert run(target, data, name, fmt=chosen_fmt).skipped_duplicates == result.judgments  # named, and idempotent


def test_ranked_export_keeps_the_whole_k_way_ranking_with_ties(judged, project_factory):
    target = project_factory(responses_per_task=3)
    run(target, export(judged, "ranked"), "ranked.jsonl")
    rankings = {j.task.prompt.text: [[j.task.slots.get(response_id=r).response.text for r in g] for g in j.ranking]
                for j in Judgment.objects.filter(project=target).select_related("task__prompt")}
    assert rankings == {"Write a haiku": [["c"], ["a", "b"]], "Name a colour": [["red"], ["blue"], ["green"]]}


def test_raw_hh_rlhf_transcripts_are_split_at_the_last_assistant_turn(tmp_path, project_factory):
    originals = [json.loads(line) for line in islice(gzip.open(HH_TEST, "rt", encoding="utf-8"), 50)]
    raw = tmp_path / "test.jsonl.gz"  # the shape of Anthropic/hh-rlhf's own files: whole dialogues, no id
    raw.write_bytes(gzip.compress("".join(json.dumps({"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]}) + "\n" for r in originals).encode()))
    project = project_factory(mode="pairwise")
    with raw.open("rb") as f:
        result = project_data_import(project=project, stream=f, filename=raw.name)
    assert result.judgments == 50
    expected = sorted((r["chosen"].strip(), r["rejected"].strip()) for r in originals if r["chosen"] != r["rejected"])
    assert pairs(project) == expected
    multi_turn = next(r for r in originals if r["prompt"].count("\n\nAssistant:") > 1)
    pair = PreferencePair.objects.filter(project=project, chosen__text=multi_turn["chosen"]).select_related("prompt").first()
    assert pair.prompt.text == multi_turn["prompt"]
    bad = json.dumps({"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: bye\n\nAssistant: b"})
    with pytest.raises(DataImportError) as caught:
        run(project, bad.encode(), "x.jsonl", fmt="hh")
    assert caught.value.issues[0].field == "rejected"


def hf_folder(root, shards: list[list[dict]]):
    """A Hugging Face dataset repository as `datasets` pushes it: data/train-0000i-of-0000n.parquet."""
    (root / "data").mkdir(parents=True)
    (root / "README.md").write_text("---\nlicense: mit\n---\n")
    for i, rows in enumerate(shards):
        pq.write_table(pa.Table.from_pylist(rows), root / "data" / f"train-{i:05d}-of-{len(shards):05d}.parquet")
    return root


def zipped(root) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            archive.write(path, f"{root.name}/{path.relative_to(root).as_posix()}")
    return out.getvalue()


def test_hugging_face_parquet_folder_as_zip_and_as_folder(tmp_path, project_factory, capsys):
    originals = [json.loads(line) for line in islice(gzip.open(HH_TEST, "rt", encoding="utf-8"), 30)]
    rows = [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]} for r in originals]
    rows[25] = {"chosen": "no assistant turn", "rejected": rows[25]["rejected"]}
    root = hf_folder(tmp_path / "hh-rlhf", [rows[:20], rows[20:]])
    project = project_factory(mode="pairwise")
    with pytest.raises(DataImportError) as caught:
        run(project, zipped(root), "hh-rlhf.zip")
    assert [(i.line, i.field) for i in caught.value.issues] == [(26, "chosen")]  # rows count on across shards
    result = run(project, zipped(root), "hh-rlhf.zip", skip_invalid=True)
    assert (result.judgments, result.skipped_invalid) == (29, 1)
    call_command("import_project_data", str(root), project="hf-folder", create=True, mode="pairwise", skip_invalid=True)
    assert "judgments 29" in capsys.readouterr().out
    single = run(project_factory(mode="pairwise"), (root / "data" / "train-00000-of-00002.parquet").read_bytes(),
                 "train.parquet")
    assert single.judgments == 20


def test_unreadable_parquet_and_zip_are_refused_on_the_file(project_factory, settings):
    project = project_factory()
    for data, name in [(b"PAR1 not really", "x.parquet"), (b"PK not a zip", "x.zip"), (zipped_text({"a.exe": "x"}), "x.zip")]:
        with pytest.raises(DataImportError) as caught:
            run(project, data, name)
        assert caught.value.issues[0].field == "file"
    settings.PAIRWISE_MAX_IMPORT_BYTES = 1000
    with pytest.raises(DataImportError, match="larger than the limit"):
        run(project, zipped_text({"a.jsonl": '{"prompt": "x"}\n' * 200}), "x.zip")


def zipped_text(files: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return out.getvalue()
