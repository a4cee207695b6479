"""Hugging Face dataset folders: `datasets.load_dataset(folder)` loads them offline, and each split's
rows are the database's pairs (or judgments) of that split (labeling.splits)."""
import io
import zipfile

import pytest
import yaml
from django.core.management import call_command

from labeling import splits
from labeling.export_records import hf_dataset_card
from labeling.models import Judgment, PreferencePair
from labeling.selectors.exports import ExportFilters
from labeling.services.exports import hf_dataset_write, preferences_export
from labeling.transcripts import prompt_transcript
from tests.labeling.judging import import_rows

pytestmark = pytest.mark.django_db
HOSTILE = 'Evil\n---\nname: "x"\n<script>alert(1)</script> # *md* | pipe'


@pytest.fixture
def pairs_project(project_factory):
    project = project_factory(mode="pairwise", name=HOSTILE)
    import_rows(project, *({"id": f"p-{i}", "prompt": f"question {i} {HOSTILE if i == 3 else ''}",
                            "chosen": f"yes {i}", "rejected": f"no\n{i}"} for i in range(60)))
    return project


def load(folder, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "cache"))


def db_pairs(project) -> dict[str, set[tuple]]:
    out: dict[str, set[tuple]] = {splits.TRAIN: set(), splits.TEST: set()}
    for p in PreferencePair.objects.filter(judgment__project=project).select_related("prompt", "chosen", "rejected"):
        split = splits.TEST if splits.prompt_is_held_out(p.prompt.external_id) else splits.TRAIN
        out[split].add((p.pk, prompt_transcript(p.prompt.text, p.prompt.messages), p.chosen.text, p.rejected.text))
    return out


def test_trl_folder_loads_and_equals_the_database_per_split(pairs_project, tmp_path, monkeypatch):
    result = hf_dataset_write(project=pairs_project, fmt="hf", filters=ExportFilters(), folder=tmp_path / "ds")
    expected = db_pairs(pairs_project)
    assert expected["train"] and expected["test"]  # both splits are exercised
    assert sorted(p.name for p in (tmp_path / "ds" / "data").iterdir()) == [
        "test-00000-of-00001.parquet", "train-00000-of-00001.parquet"]
    ds = load(tmp_path / "ds", tmp_path, monkeypatch)
    assert set(ds) == {"train", "test"}
    for split in ("train", "test"):
        got = {(r["id"], r["prompt"], r["chosen"], r["rejected"]) for r in ds[split]}
        assert got == expected[split] and len(ds[split]) == len(expected[split])
    assert result.extra["splits"] == {s: len(expected[s]) for s in ("train", "test")}


def test_card_front_matter_parses_and_survives_hostile_names(pairs_project, tmp_path):
    hf_dataset_write(project=pairs_project, fmt="hf", filters=ExportFilters(), folder=tmp_path / "ds")
    text = (tmp_path / "ds" / "README.md").read_text()
    front = text.split("---\n")[1]
    meta = yaml.safe_load(front)
    assert meta["pretty_name"] == HOSTILE
    assert meta["configs"] == [{"config_name": "default", "data_files": [
        {"split": "train", "path": "data/train-00000-of-00001.parquet"},
        {"split": "test", "path": "data/test-00000-of-00001.parquet"}]}]
    card = hf_dataset_card(fmt="hf-chat", project="a", rows={"test": 2}, filters={})
    assert yaml.safe_load(card.split("---\n")[1])["configs"][0]["data_files"] == [
        {"split": "test", "path": "data/test-00000-of-00001.parquet"}]


def test_conversational_and_ranked_shapes_and_split_filter(pairs_project, tmp_path, monkeypatch):
    hf_dataset_write(project=pairs_project, fmt="hf-chat", filters=ExportFilters(split="test"), folder=tmp_path / "chat")
    chat = load(tmp_path / "chat", tmp_path, monkeypatch)
    assert set(chat) == {"test"}
    expected = db_pairs(pairs_project)["test"]
    assert {(r["id"], r["prompt"][-1]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"])
            for r in chat["test"]} == expected
    assert all(r["chosen"][0]["role"] == "assistant" for r in chat["test"])

    hf_dataset_write(project=pairs_project, fmt="hf-ranked", filters=ExportFilters(), folder=tmp_path / "ranked")
    ranked = load(tmp_path / "ranked", tmp_path, monkeypatch)
    judgments = Judgment.objects.filter(project=pairs_project)
    assert len(ranked["train"]) + len(ranked["test"]) == judgments.count() == 60
    for row in ranked["test"]:
        assert row["responses"][0]["rank"] == 0 and row["responses"][1]["rank"] == 1
    assert {(r["prompt"], r["responses"][0]["text"], r["responses"][1]["text"]) for r in ranked["test"]} == {
        (p, c, r) for _, p, c, r in expected}


def test_stream_is_a_zip_of_the_folder_and_cli_writes_a_folder(pairs_project, tmp_path, monkeypatch):
    out = io.BytesIO()
    result = preferences_export(project=pairs_project, fmt="hf", filters=ExportFilters(), out=out)
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as archive:
        assert sorted(archive.namelist()) == ["README.md", "data/test-00000-of-00001.parquet",
                                              "data/train-00000-of-00001.parquet"]
        archive.extractall(tmp_path / "unzipped")
    assert result.rows == 60
    assert sum(len(s) for s in load(tmp_path / "unzipped", tmp_path, monkeypatch).values()) == 60

    call_command("export_preferences", project=pairs_project.slug, format="hf", output=str(tmp_path / "cli"))
    assert sorted(p.name for p in (tmp_path / "cli" / "data").iterdir()) == [
        "test-00000-of-00001.parquet", "train-00000-of-00001.parquet"]
    assert (tmp_path / "cli" / "README.md").is_file()
