"""Exports of other labeling tools, as those tools write them: Label Studio's JSON export of a
pairwise and of a ranker project, and Argilla v2's records (`to_json`, and `to_disk` zipped)."""
from __future__ import annotations

import io
import json
import zipfile

import pytest

from labeling.models import ComparisonTask, Judgment, PreferencePair
from labeling.services.imports import DataImportError, project_data_import

pytestmark = pytest.mark.django_db
STAMP = "2024-05-02T09:14:03.512345Z"


def run(project, data: bytes, filename: str, **kw):
    return project_data_import(project=project, stream=io.BytesIO(data), filename=filename, **kw)


def pair_texts(project) -> list[tuple[str, str, str]]:
    rows = PreferencePair.objects.filter(project=project).values_list("judgment__source", "chosen__text", "rejected__text")
    return sorted(rows)


def ls_annotation(annotation_id: int, task_id: int, user: int, result: list[dict], **extra) -> dict:
    return {"id": annotation_id, "completed_by": user, "result": result, "was_cancelled": False, "ground_truth": False,
            "created_at": STAMP, "updated_at": STAMP, "draft_created_at": None, "lead_time": 14.2, "prediction": {},
            "result_count": 0, "unique_id": f"u-{annotation_id}", "import_id": None, "last_action": None,
            "task": task_id, "project": 7, "updated_by": user, "parent_prediction": None, "parent_annotation": None,
            "last_created_by": None, **extra}


def ls_task(task_id: int, data: dict, annotations: list[dict]) -> dict:
    return {"id": task_id, "annotations": annotations, "file_upload": "rlhf.json", "drafts": [], "predictions": [],
            "data": data, "meta": {}, "created_at": STAMP, "updated_at": STAMP, "inner_id": task_id,
            "total_annotations": len(annotations), "cancelled_annotations": 0, "total_predictions": 0,
            "comment_count": 0, "unresolved_comment_count": 0, "last_comment_updated_at": None, "project": 7,
            "updated_by": 1, "comment_authors": []}


def pairwise(selected: str) -> list[dict]:
    """The <Pairwise name="comparison" toName="answer1,answer2"/> control's result."""
    return [{"value": {"selected": selected}, "id": "hG3kQ", "from_name": "comparison", "to_name": "answer1",
             "type": "pairwise", "origin": "manual"}]


def test_label_studio_pairwise_project_export(project_factory):
    tasks = [
        ls_task(1, {"prompt": "Say hi", "answer1": "Hello!", "answer2": "Go away."}, [ls_annotation(10, 1, 1, pairwise("left"))]),
        ls_task(2, {"prompt": "2+2?", "answer1": "5", "answer2": "4"},
                [ls_annotation(11, 2, 1, pairwise("right")), ls_annotation(12, 2, 2, pairwise("right")),
                 ls_annotation(13, 2, 3, [], was_cancelled=True)]),
        ls_task(3, {"prompt": "Unlabeled", "answer1": "x", "answer2": "y"}, []),
    ]
    project = project_factory(mode="pairwise", responses_per_task=2)
    result = run(project, json.dumps(tasks, indent=2).encode(), "project-7-at-2024-05-02-09-20-5a1b2c3d.json")
    assert (result.judgments, result.pairs, result.tasks) == (3, 3, 4)
    assert pair_texts(project) == [("label-studio:1", "4", "5"), ("label-studio:1", "Hello!", "Go away."),
                                   ("label-studio:2", "4", "5")]
    assert ComparisonTask.objects.get(project=project, status="open").prompt.text == "Unlabeled"
    again = run(project, json.dumps(tasks).encode(), "again.json", fmt="label-studio")
    assert again.skipped_duplicates == 4 and again.judgments == 0


def test_label_studio_ranker_project_export(project_factory):
    items = [{"id": "gpt", "title": "Model A", "body": "Paris."}, {"id": "llama", "title": "Model B", "body": "Lyon."},
             {"id": "mistral", "title": "Model C", "body": "Paris, France."}]
    ranked = [{"value": {"ranker": {"rank": ["mistral", "gpt", "llama"]}}, "id": "Pp1", "from_name": "rank",
               "to_name": "results", "type": "ranker", "origin": "manual"}]
    broken = [{**ranked[0], "value": {"ranker": {"rank": ["mistral", "nobody"]}}}]
    tasks = [ls_task(1, {"prompt": "Capital of France?", "items": items}, [ls_annotation(20, 1, 4, ranked)]),
             ls_task(2, {"prompt": "Again?", "items": items}, [ls_annotation(21, 2, 4, broken)])]
    project = project_factory(responses_per_task=3)
    with pytest.raises(DataImportError) as caught:
        run(project, json.dumps(tasks, indent=2).encode(), "ranker.json")
    text = json.dumps(tasks, indent=2)
    second_task = text[:text.index('"id": 2,\n    "annotations"')].count("\n")  # the line its "{" is on
    assert caught.value.issues[0].line == second_task and caught.value.issues[0].field == "annotations.result.value.ranker"
    result = run(project, json.dumps(tasks, indent=2).encode(), "ranker.json", skip_invalid=True)
    assert (result.judgments, result.pairs, result.skipped_invalid) == (1, 3, 1)
    judgment = Judgment.objects.get(project=project)
    order = [judgment.task.slots.get(response_id=group[0]).response.text for group in judgment.ranking]
    assert order == ["Paris, France.", "Paris.", "Lyon."] and judgment.source == "label-studio:4"


def argilla_record(record_id: str, fields: dict, responses: dict) -> dict:
    """One record as Argilla v2's Record.to_dict() writes it (rg.Dataset.records.to_json / to_disk)."""
    return {"id": record_id, "fields": fields, "metadata": {"category": "geography"},
            "suggestions": {"preference": {"value": ["response2", "response1"], "score": None, "agent": "gpt-4o"}},
            "responses": responses, "vectors": {}, "status": "completed" if responses else "pending",
            "_server_id": f"9f1c0d2e-0000-4000-8000-{record_id[-12:].rjust(12, '0')}"}


ARGILLA = [
    argilla_record("rec-1", {"prompt": "Capital of Italy?", "response1": "Rome.", "response2": "Milan."},
                   {"preference": [{"value": ["response1", "response2"], "user_id": "u-ann", "status": "submitted"},
                                   {"value": [{"value": "response2", "rank": 1}, {"value": "response1", "rank": 2}],
                                    "user_id": "u-bob", "status": "submitted"},
                                   {"value": ["response2", "response1"], "user_id": "u-eve", "status": "draft"}]}),
    argilla_record("rec-2", {"prompt": "Largest ocean?", "response1": "Atlantic.", "response2": "Pacific."},
                   {"better": [{"value": "response2", "user_id": "u-ann", "status": "submitted"}],
                    "comment": [{"value": "easy one", "user_id": "u-ann", "status": "submitted"}]}),
    argilla_record("rec-3", {"prompt": "Not labeled yet", "response1": "a", "response2": "b"}, {}),
]


def test_argilla_records_to_json(project_factory):
    project = project_factory(mode="pairwise", responses_per_task=2)
    result = run(project, json.dumps(ARGILLA).encode(), "records.json")
    assert (result.judgments, result.tasks) == (3, 4)  # the draft is not a judgment; rec-3 is an open task
    assert pair_texts(project) == [("argilla:u-ann", "Pacific.", "Atlantic."), ("argilla:u-ann", "Rome.", "Milan."),
                                   ("argilla:u-bob", "Milan.", "Rome.")]


def test_argilla_to_disk_folder_zipped(project_factory):
    settings = {"fields": [{"name": "prompt", "type": "text"}, {"name": "response1", "type": "text"},
                           {"name": "response2", "type": "text"}],
                "questions": [{"name": "preference", "type": "ranking", "values": {"response1": "1", "response2": "2"}}]}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("my_dataset/.argilla/settings.json", json.dumps(settings))
        archive.writestr("my_dataset/.argilla/dataset.json", json.dumps({"name": "my_dataset", "id": "d-1"}))
        archive.writestr("my_dataset/records.json", json.dumps(ARGILLA))
    project = project_factory(mode="pairwise", responses_per_task=2)
    assert run(project, out.getvalue(), "my_dataset.zip", fmt="argilla").judgments == 3
