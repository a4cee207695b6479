"""Every import path, and every import error leaves the database exactly as it was."""
import gzip
import io
import json

import pytest

from tests.paths import SHARED_DATASETS
from django.core.files.uploadedfile import SimpleUploadedFile
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


@pytest.mark.parametrize("filename", ["d.jsonl", "d.json"])
def test_json_errors_read_plainly_with_line_and_column(project_factory, filename):
    """A raw tab inside a string: json says "Invalid control character at", which read "… at at column 13"."""
    body = b'[\n{"prompt": "ok"},\n{"prompt": "a\tb"}\n]\n' if filename == "d.json" else b'{"prompt": "ok"}\n{"prompt": "a\tb"}\n'
    with pytest.raises(DataImportError) as caught:
        run(project_factory(), body, filename=filename)
    issue = caught.value.issues[0]
    line = 3 if filename == "d.json" else 2
    assert (issue.line, issue.field) == (line, "json")
    assert issue.message.startswith(f"invalid JSON at line {line}, column 14: invalid control character (a tab")
    assert " at at " not in issue.message


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


# --- what preference records become: judgments (training data) or tasks open for annotators -----------

def hh_pairs(n: int, prefix: str = "hh") -> list[dict]:
    return [{"id": f"{prefix}/{i}", "prompt": f"\n\nHuman: {prefix} question {i}\n\nAssistant:", "chosen": f" good {i}",
             "rejected": f" bad {i}", "source": "hh-rlhf/helpful-base"} for i in range(n)]


def test_kept_as_judgments_they_fill_every_seat_and_the_preview_says_so(project_factory):
    project = project_factory(mode="pairwise", overlap=1)
    preview = run(project, jsonl(*hh_pairs(4)), dry_run=True)
    assert (preview.judgments, preview.open_tasks, preview.project_open_tasks, preview.references) == (4, 0, 0, 0)
    assert preview.preferences == "judgments" and not preview.counts_for_retrain
    assert counts()["ComparisonTask"] == 0  # a preview writes nothing
    result = run(project, jsonl(*hh_pairs(4)))
    assert result.project_open_tasks == 0 and set(ComparisonTask.objects.values_list("status", flat=True)) == {"complete"}
    # Imported judgments do not count toward the training threshold unless the import asks.
    assert not Judgment.objects.filter(counts_for_retrain=True).exists()
    more = run(project, jsonl(*hh_pairs(2, prefix="more")), count_for_retrain=True)
    assert more.counts_for_retrain and Judgment.objects.filter(counts_for_retrain=True).count() == 2


def test_opened_for_annotators_they_leave_open_tasks_with_a_hidden_reference(project_factory, member, api_client):
    from labeling.services.assignment import task_assign_next

    project = project_factory(mode="pairwise", overlap=1)
    rows = hh_pairs(12)
    preview = run(project, jsonl(*rows), preferences="open", dry_run=True)
    assert (preview.judgments, preview.references, preview.open_tasks, preview.project_open_tasks) == (0, 12, 12, 12)
    result = run(project, jsonl(*rows), preferences="open")
    assert (result.judgments, result.pairs, result.tasks) == (0, 0, 12)
    assert not Judgment.objects.exists() and not PreferencePair.objects.exists()
    tasks = list(ComparisonTask.objects.filter(project=project))
    assert all(t.status == "open" and t.judgments_count == 0 and not t.is_gold for t in tasks)
    chosen_slots = set()
    for task in tasks:
        slots = list(task.slots.order_by("position").select_related("response"))
        good = next(s for s in slots if s.response.text.startswith(" good"))
        bad = next(s for s in slots if s.response.text.startswith(" bad"))
        assert task.gold_ranking == [[good.response_id], [bad.response_id]]  # the recorded choice, as reference
        chosen_slots.add(good.position)
    assert chosen_slots == {0, 1}  # the chosen response is not always first: slot order tells nothing

    # The queue serves them, and nothing an annotator reads carries the reference.
    annotator = member(project, "annotator")
    served = task_assign_next(annotator=annotator, project=project)
    assert served.assignment is not None and served.reason in ("oldest", "started")
    body = api_client(annotator).post(f"/api/projects/{project.slug}/next/", format="json").content.decode()
    task = ComparisonTask.objects.get(pk=served.assignment.task_id)
    assert "gold" not in body and "reference" not in body and "hh-rlhf" not in body
    page = api_client(annotator, token=False)
    page.force_login(annotator)
    html = page.get(f"/label/{project.slug}/").content.decode()
    assert "gold" not in html.lower() and json.dumps(task.gold_ranking) not in html


def test_opened_preferences_are_not_imported_twice(project_factory):
    project = project_factory(mode="pairwise")
    run(project, jsonl(*hh_pairs(3)))  # first as judgments
    again = run(project, jsonl(*hh_pairs(5)), preferences="open")
    assert (again.references, again.skipped_duplicates) == (2, 3)
    third = run(project, jsonl(*hh_pairs(5)), preferences="open")
    assert (third.tasks, third.skipped_duplicates) == (0, 5)


def test_agreement_with_the_original_labels_on_the_quality_tab(project_factory, member):
    from labeling.selectors.quality import quality_report
    from labeling.services.assignment import task_assign_next
    from tests.labeling.judging import submit

    project = project_factory(mode="pairwise", overlap=1)
    run(project, jsonl(*hh_pairs(2)), preferences="open")
    annotator = member(project, "annotator")
    verdicts = []
    for agree in (True, False):
        assignment = task_assign_next(annotator=annotator, project=project).assignment
        task = ComparisonTask.objects.get(pk=assignment.task_id)
        good, bad = task.gold_ranking[0][0], task.gold_ranking[1][0]
        submit(assignment, annotator, ranking=[[good], [bad]] if agree else [[bad], [good]])
        verdicts.append(agree)
    report = quality_report(project=project, rounds=10)["reference"]
    assert report["overall"] == {"agreement": 0.5, "agree": 1, "compared": 2}
    assert report["annotators"][0]["username"] == annotator.username
    # A reference is not gold: gold accuracy stays unmeasured, the tasks completed by their overlap.
    assert quality_report(project=project, rounds=10)["annotators"][0]["gold_pairs"] == 0
    assert set(ComparisonTask.objects.values_list("status", flat=True)) == {"complete"}


def test_the_api_and_the_command_take_the_choice(project_factory, member, api_client, tmp_path):
    project = project_factory(mode="pairwise")
    admin = member(project, "admin")
    url = f"/api/projects/{project.slug}/imports/"
    upload = lambda **fields: api_client(admin).post(url, {  # noqa: E731
        "file": SimpleUploadedFile("pairs.jsonl", jsonl(*hh_pairs(2))), **fields}, format="multipart")
    bad = upload(preferences="both")
    assert bad.status_code == 400 and "preferences" in bad.json() and counts()["ComparisonTask"] == 0
    with pytest.raises(DataImportError, match="demonstrate project"):
        run(project_factory(mode="demonstrate"), jsonl(*hh_pairs(1)), preferences="open")
    preview = upload(preferences="open", dry_run="true")
    assert preview.status_code == 200 and preview.json()["references"] == 2 and preview.json()["project_open_tasks"] == 2
    made = upload(count_for_retrain="true")
    assert made.status_code == 201 and made.json()["judgments"] == 2 and made.json()["counts_for_retrain"] is True
    assert made.json()["project_open_tasks"] == 0
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(jsonl(*hh_pairs(3, prefix="cli")))
    out = io.StringIO()
    call_command("import_project_data", str(path), "--project", project.slug, "--preferences", "open", stdout=out)
    assert "references 3" in out.getvalue() and f"{project.slug} has 3 tasks open for annotators" in out.getvalue()
    assert ImportBatch.objects.order_by("-id").first().created["preferences"] == "open"
