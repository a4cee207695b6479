"""Every import path, and every import error leaves the database exactly as it was."""
import gzip
import io
import json

import pytest

from tests.paths import SHARED_DATASETS
from django.core.management import CommandError, call_command

from labeling.models import ComparisonTask, Demonstration, ImportBatch, Judgment, PreferencePair, Prompt, Response
from labeling.services.imports import DataImportError, project_data_import

pytestmark = pytest.mark.django_db
SHARED = SHARED_DATASETS


def jsonl(*rows) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def run(project, data: bytes, filename="data.jsonl", **kw):
    return project_data_import(project=project, stream=io.BytesIO(data), filename=filename, **kw)


def counts():
    return {m.__name__: m.objects.count() for m in
            (Prompt, Response, ComparisonTask, Judgment, PreferencePair, Demonstration, ImportBatch)}


def test_prompts_jsonl_and_chat_messages(project_factory):
    project = project_factory()
    result = run(project, jsonl({"id": "a", "prompt": "Write a haiku"},
                                {"messages": [{"role": "system", "content": "be brief"},
                                              {"role": "user", "content": "hi"}], "metadata": {"lang": "en"}}))
    assert result.prompts == 2 and result.tasks == 0
    chat = Prompt.objects.get(project=project, messages__isnull=False)
    assert chat.messages[1] == {"role": "user", "content": "hi"} and chat.metadata == {"lang": "en"}
    assert chat.external_id.startswith("sha1:")


def test_prompts_with_responses_make_tasks_in_order(project_factory):
    project = project_factory(responses_per_task=3)
    result = run(project, jsonl({"id": "p", "prompt": "q", "responses": ["r0", {"text": "r1", "source": "gpt-x"}, "r2"]}))
    assert (result.prompts, result.responses, result.tasks) == (1, 3, 1)
    task = ComparisonTask.objects.get(project=project)
    texts = [slot.response.text for slot in task.slots.order_by("position")]
    assert texts == ["r0", "r1", "r2"] and task.status == "open"
    assert Response.objects.get(text="r1").source == "gpt-x"
    assert Response.objects.get(text="r0").source == "import:data.jsonl"


def test_gold_ranking_maps_indices_to_response_ids(project_factory):
    project = project_factory(responses_per_task=2, mode="pairwise")
    run(project, jsonl({"prompt": "q", "responses": ["good", "bad"], "gold_ranking": [[0], [1]]}))
    task = ComparisonTask.objects.get(project=project)
    good, bad = (Response.objects.get(text=t).pk for t in ("good", "bad"))
    assert task.is_gold and task.gold_ranking == [[good], [bad]]


def test_preference_records_become_judgments_and_pairs(project_factory):
    project = project_factory(mode="pairwise")
    rows = [{"id": f"hh/{i}", "prompt": "\n\nHuman: hi\n\nAssistant:", "chosen": f" yes {i}", "rejected": " no",
             "source": "hh-rlhf/helpful-base-test"} for i in range(3)]
    result = run(project, jsonl(*rows))
    assert (result.judgments, result.pairs, result.tasks, result.prompts) == (3, 3, 3, 1)
    pair = PreferencePair.objects.select_related("chosen", "rejected", "judgment").first()
    assert pair.chosen.text.startswith(" yes") and pair.rejected.text == " no"
    assert pair.judgment.source == "hh-rlhf/helpful-base-test" and pair.judgment.annotator is None
    assert ComparisonTask.objects.filter(status="complete").count() == 3


def test_identical_chosen_and_rejected_is_a_tie_without_pair(project_factory):
    project = project_factory(mode="pairwise")
    result = run(project, jsonl({"id": "x", "prompt": "p", "chosen": "same", "rejected": "same"}))
    assert result.judgments == 1 and result.pairs == 0


def test_real_shared_dataset_imports_gzip(project_factory):
    project = project_factory(mode="pairwise")
    with open(f"{SHARED}/llmbar/natural.jsonl.gz", "rb") as f:
        result = project_data_import(project=project, stream=f, filename="natural.jsonl.gz")
    assert result.judgments == 100 and result.pairs == 100
    with open(f"{SHARED}/llmbar/natural.jsonl.gz", "rb") as f:
        again = project_data_import(project=project, stream=f, filename="natural.jsonl.gz")
    assert again.skipped_duplicates == 100 and again.judgments == 0


def test_demonstrations_attach_to_prompt_by_id(project_factory):
    project = project_factory(mode="demonstrate")
    run(project, jsonl({"id": "p1", "prompt": "Explain gravity"}))
    result = run(project, jsonl({"id": "p1", "prompt": "Explain gravity", "demonstration": "Mass attracts mass."}))
    assert result.demonstrations == 1 and result.prompts == 0
    assert Demonstration.objects.get().prompt.external_id == "p1"


def test_csv_prompts_responses_and_preferences(project_factory):
    project = project_factory(responses_per_task=2)
    data = 'id,prompt,response_1,response_2\nc1,"Hello, world",first,second\nc2,Just a prompt,,\n'
    result = run(project, data.encode(), filename="rows.csv")
    assert (result.prompts, result.tasks) == (2, 1)
    pref = "id,prompt,chosen,rejected\nx1,q,good,bad\n"
    assert run(project, gzip.compress(pref.encode()), filename="p.csv.gz").pairs == 1


def test_duplicates_by_external_id_are_skipped_and_counted(project_factory):
    project = project_factory()
    run(project, jsonl({"id": "a", "prompt": "one"}))
    result = run(project, jsonl({"id": "a", "prompt": "one again"}, {"id": "b", "prompt": "two"},
                                {"id": "b", "prompt": "two twice"}))
    assert result.prompts == 1 and result.skipped_duplicates == 2
    assert Prompt.objects.get(external_id="a").text == "one"


@pytest.mark.parametrize("payload,filename,line,field", [
    (jsonl({"prompt": "ok"}, '{"prompt": "broken"', {"prompt": "ok2"}), "d.jsonl", 2, "json"),
    (jsonl({"prompt": "ok"}, {"id": "x"}), "d.jsonl", 2, "prompt"),
    (jsonl({"prompt": "ok"}, {"prompt": "q", "responses": ["only one"]}), "d.jsonl", 2, "responses"),
    (jsonl({"prompt": "q", "chosen": "a", "rejected": "b"}), "d.jsonl", 1, "id"),
    (jsonl({"prompt": "q", "id": "1", "chosen": "", "rejected": "b"}), "d.jsonl", 1, "chosen"),
    (jsonl({"prompt": "nul \u0000 byte"}), "d.jsonl", 1, "prompt"),
    (jsonl([1, 2]), "d.jsonl", 1, "record"),
    (jsonl({"messages": [{"role": "wizard", "content": "x"}]}), "d.jsonl", 1, "messages[0].role"),
    (jsonl({"prompt": "q", "responses": ["a", "b", "c", "d"], "gold_ranking": [[0], [9]]}), "d.jsonl", 1, "gold_ranking"),
    (b"id,text\n1,no prompt column\n", "d.csv", 1, "prompt"),
    (b"\xff\xfe not utf8", "d.jsonl", 0, "file"),
    (b"", "d.jsonl", 0, "file"),
])
def test_errors_name_the_line_and_write_nothing(project_factory, payload, filename, line, field):
    project = project_factory(responses_per_task=4)
    run(project, jsonl({"id": "kept", "prompt": "already here"}))
    before = counts()
    with pytest.raises(DataImportError) as caught:
        run(project, payload, filename=filename)
    assert (caught.value.issues[0].line, caught.value.issues[0].field) == (line, field)
    assert counts() == before


def test_every_bad_line_is_reported(project_factory):
    project = project_factory()
    with pytest.raises(DataImportError) as caught:
        run(project, jsonl({"prompt": ""}, {"prompt": "fine"}, {"nope": 1}))
    assert [i.line for i in caught.value.issues] == [1, 3]


def test_oversized_file_and_gzip_bomb_are_refused(project_factory):
    project = project_factory()
    big = jsonl(*({"prompt": "x" * 100} for _ in range(50)))
    with pytest.raises(DataImportError, match="larger than the limit"):
        run(project, big, max_bytes=1000)
    with pytest.raises(DataImportError, match="larger than the limit"):
        run(project, gzip.compress(b'{"prompt": "' + b"a" * 100_000 + b'"}\n'), filename="x.jsonl.gz", max_bytes=10_000)
    assert Prompt.objects.count() == 0


def test_text_over_the_character_limit(project_factory, settings):
    settings.PAIRWISE_MAX_TEXT_CHARS = 10
    with pytest.raises(DataImportError, match="longer than 10"):
        run(project_factory(), jsonl({"prompt": "x" * 11}))


def test_command_creates_project_and_reports_line_numbers(tmp_path, capsys):
    good = tmp_path / "good.jsonl"
    good.write_bytes(jsonl({"id": "1", "prompt": "q", "chosen": "a", "rejected": "b"}))
    call_command("import_project_data", str(good), project="cmd", create=True, mode="pairwise")
    assert "judgments 1" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(jsonl({"prompt": "ok"}, "{oops"))
    with pytest.raises(CommandError, match=r"bad.jsonl:2: json"):
        call_command("import_project_data", str(bad), project="cmd")
    with pytest.raises(CommandError, match="does not exist"):
        call_command("import_project_data", str(good), project="missing")


@pytest.mark.postgres_only
def test_hundred_thousand_prompts_use_bulk_writes(project_factory, django_assert_max_num_queries):
    project = project_factory()
    data = jsonl(*({"id": str(i), "prompt": f"prompt number {i}"} for i in range(100_000)))
    # Bulk inserts: the query count grows with batches (2,000 rows), never with rows.
    with django_assert_max_num_queries(200):
        result = run(project, data)
    assert result.prompts == 100_000
