"""Getting data in: one service behind the admin upload, the API and `manage.py import_project_data`.

Accepted, as JSONL, JSON (one record per line, or an array of records) or CSV, each optionally
gzipped, Parquet, or a zip of a dataset folder of those, one record per line/row. The native shapes:
  - a prompt:                 {"id"?, "prompt": "..."} or {"id"?, "messages": [{"role", "content"}, ...]}
                              (in a demonstrate project each one also gets a task, with no responses,
                              for an annotator to write the demonstration)
  - a prompt with responses:  {"prompt": ..., "responses": ["...", {"text": "...", "source": "..."}]}
                              optional "gold_ranking": tie groups of response indices, best first
  - a preference record:      {"id", "prompt", "chosen", "rejected", "source"?} (the ../shared/datasets shape),
                              stored as a judgment from a named external source plus its pair
  - a demonstration:          {"prompt": ..., "demonstration": "..."}
  - a ranked judgment:        {"id", "prompt" or "messages", "responses": [...], "ranking": [[0], [1, 2]], "source"?}
Other formats (fmt, auto-detected per row by default) become these shapes first: the product's own
exports and raw hh-rlhf transcripts (labeling.services.import_formats), Label Studio and Argilla
exports (labeling.services.import_external).

The file is parsed, validated and written a chunk at a time as it is read (labeling.services.import_parsing;
memory stays at one chunk, not the file), all in one transaction with bulk inserts: any problem, reported
with its line number, rolls the whole of it back, so an import is all or nothing. With skip_invalid the valid records are written (still in one transaction) and the rows
left out come back in ImportResult.rejects, each with its error; the ImportBatch keeps them too.

Preference records (pairs and ranked judgments) are written one of two ways, as the caller chooses
(PREFERENCES): "judgments" keeps them as judgments from their source (training data; each fills its
task's seat, so annotators get nothing to label), "open" makes each an open task with its responses
for annotators, the recorded ranking kept as the task's hidden reference (gold_ranking on a task
that is not gold: the queue serves it like any task, nothing annotators read includes it, and the
quality tab compares their verdicts with it). Imported judgments count toward the project's
retraining threshold only with count_for_retrain, so an import never starts a round by itself.

Uploads are refused by name (.jsonl, .json, .csv, optionally .gz) and by content: NUL bytes mean
binary data, a .gz name must hold gzip data, and the size limit counts bytes after decompression.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import IO, Any, Callable

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import transaction

from labeling.models import (
    ComparisonTask, Demonstration, ImportBatch, Judgment, PreferencePair, Project, Prompt, TaskResponse,
)
from labeling.services.import_parsing import (  # the checks and the error are part of this module's API
    FORMATS, DataImportError, ImportIssue, Record, import_records_chunks, import_upload_check,
)
from labeling.services.judgments import preference_pairs_build
from labeling.services.tasks import NewResponse, NewTask, tasks_create

__all__ = ["FORMATS", "PREFERENCES", "DataImportError", "ImportIssue", "ImportResult",
           "import_options_check", "import_upload_check", "project_data_import"]

PREFERENCES = ("judgments", "open")  # what preference records become; the first keeps the old behaviour

BATCH = 2000
BATCH_REJECTS_KEPT = 1000  # an import's record stays small; the full list goes back to the caller


@dataclass
class ImportResult:
    prompts: int = 0
    responses: int = 0
    tasks: int = 0
    judgments: int = 0
    pairs: int = 0
    demonstrations: int = 0
    skipped_duplicates: int = 0
    skipped_invalid: int = 0
    open_tasks: int = 0  # tasks this import leaves open for annotators
    project_open_tasks: int = 0  # the project's open tasks (gold apart) once it is written
    references: int = 0  # of those, tasks holding an imported ranking as their hidden reference
    preferences: str = PREFERENCES[0]
    counts_for_retrain: bool = False
    batch_id: int | None = None
    dry_run: bool = False
    rejects: list[ImportIssue] = field(default_factory=list)
    preview: list[dict[str, Any]] = field(default_factory=list)  # the first records as parsed

    def as_dict(self) -> dict[str, int | str | bool | None]:
        """The counts (and batch id); the rejects and the preview are apart."""
        return {key: value for key, value in self.__dict__.items() if key not in ("rejects", "preview")}


PREVIEW_ROWS = 10
PREVIEW_CHARS = 300


def import_issues_list(issues: list[ImportIssue]) -> list[dict[str, Any]]:
    """Issues as the API and an import batch show them: {line, field, message}."""
    return [{"line": i.line, "field": i.field, "message": i.message} for i in issues]


def _preview(records: list[Record]) -> list[dict[str, Any]]:
    """What the importer made of the first rows, clipped: the console shows it before anything is written."""
    def clip(text: str) -> str:
        return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"

    return [{
        "line": r.line, "kind": r.kind, "id": r.record_id,
        "prompt": clip(r.text or (r.messages[-1]["content"] if r.messages else "")),
        "responses": [{"text": clip(text), "source": source} for text, source in r.responses],
        "ranking": r.ranking, "demonstration": clip(r.demonstration), "source": r.source,
    } for r in records[:PREVIEW_ROWS]]


# --- writing ---------------------------------------------------------------------------------

def _existing(model, field_name: str, values: list[str], **filters) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(values), BATCH):
        chunk = values[start:start + BATCH]
        found.update(model.objects.filter(**{f"{field_name}__in": chunk}, **filters).values_list(field_name, flat=True))
    return found


def _import_key(project: Project, *parts: str) -> str:
    digest = hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()
    return f"import:{project.pk}:{digest}"


def _task_key(prompt_key: str, texts: list[str]) -> str:
    """A task by content: its prompt and its responses' texts in any order."""
    return hashlib.sha1("\x1f".join([prompt_key, *sorted(texts)]).encode("utf-8")).hexdigest()


def _dedupe_key(project: Project, record: Record, preferences: str = PREFERENCES[0]) -> tuple[str, str]:
    """(which table decides, key): preference records by their id (opened ones, which leave no
    judgment, by their task's content), demonstrations by content, everything else by the prompt's
    external id."""
    if record.kind == "preference" and preferences == "open":
        return "task", _task_key(record.prompt_key, [text for text, _ in record.responses])
    if record.kind == "preference":
        return "judgment", _import_key(project, record.record_id)
    if record.kind == "demonstration":
        return "demonstration", _import_key(project, record.prompt_key, record.demonstration)
    return "prompt", record.prompt_key


def _existing_tasks(project: Project, records: list[Record]) -> set[str]:
    """Content keys of the project's tasks on the prompts of these (opened preference) records."""
    prompt_keys = sorted({r.prompt_key for r in records})
    texts: dict[int, tuple[str, list[str]]] = {}
    for start in range(0, len(prompt_keys), BATCH):
        slots = TaskResponse.objects.filter(task__project=project, task__prompt__external_id__in=prompt_keys[start:start + BATCH])
        for task_id, prompt_key, text in slots.values_list("task_id", "task__prompt__external_id", "response__text"):
            texts.setdefault(task_id, (prompt_key, []))[1].append(text)
    return {_task_key(prompt_key, found) for prompt_key, found in texts.values()}


def _drop_duplicates(project: Project, records: list[Record], result: ImportResult, preferences: str) -> list[Record]:
    keys = [_dedupe_key(project, r, preferences) for r in records]
    wanted = {table: [k for t, k in keys if t == table] for table in ("prompt", "judgment", "demonstration", "task")}
    taken = {
        "prompt": _existing(Prompt, "external_id", wanted["prompt"], project=project),
        "judgment": _existing(Judgment, "idempotency_key", wanted["judgment"]),
        "demonstration": _existing(Demonstration, "idempotency_key", wanted["demonstration"]),
        "task": _existing_tasks(project, [r for r, (t, _) in zip(records, keys) if t == "task"]) if wanted["task"] else set(),
    }
    kept = []
    for record, (table, key) in zip(records, keys):
        if key in taken[table]:
            result.skipped_duplicates += 1
            continue
        taken[table].add(key)
        kept.append(record)
    return kept


def _prompts(project: Project, records: list[Record], result: ImportResult) -> dict[str, Prompt]:
    """Prompt rows for every record, reusing existing ones (preference records share prompts by content)."""
    keys = list(dict.fromkeys(r.prompt_key for r in records))
    by_key: dict[str, Prompt] = {}
    for start in range(0, len(keys), BATCH):
        for prompt in Prompt.objects.filter(project=project, external_id__in=keys[start:start + BATCH]):
            by_key[prompt.external_id] = prompt
    new = []
    for record in records:
        if record.prompt_key not in by_key:
            prompt = Prompt(project=project, external_id=record.prompt_key, text=record.text,
                            messages=record.messages, metadata=record.metadata)
            by_key[record.prompt_key] = prompt
            new.append(prompt)
    Prompt.objects.bulk_create(new, batch_size=BATCH)
    result.prompts += len(new)  # the counts add up over the file's chunks
    return by_key


def _opened(record: Record) -> Record:
    """A preference record to be labeled again: its responses in an order of their own (seeded by the
    record, so a re-import matches), so neither slot order nor response ids tell the recorded choice
    (hh-rlhf lists "chosen" first). Its ranking, renumbered, becomes the task's hidden reference."""
    order = sorted(range(len(record.responses)),
                   key=lambda i: hashlib.sha1(f"{record.record_id}\x1f{i}".encode("utf-8")).hexdigest())
    slot = {old: new for new, old in enumerate(order)}
    return dataclasses.replace(record, responses=[record.responses[i] for i in order],
                               ranking=[[slot[i] for i in group] for group in record.ranking or []])


def _write(project: Project, records: list[Record], prompts: dict[str, Prompt], result: ImportResult) -> None:
    specs, with_tasks, judgments, demos = [], [], [], []
    opened = result.preferences == "open"
    for record in records:
        prompt = prompts[record.prompt_key]
        if record.kind == "demonstration":
            demos.append(Demonstration(
                project=project, prompt=prompt, text=record.demonstration,
                idempotency_key=_dedupe_key(project, record)[1],
            ))
            continue
        if record.kind == "prompt" and project.mode != Project.Mode.DEMONSTRATE:
            continue  # a prompt to generate candidates for later
        # In a demonstrate project a bare prompt becomes a task with no responses: the queue serves it
        # and the labeling page asks for the ideal response (labeling.services.assignment.demonstration_submit).
        judged = record.kind == "preference" and not opened  # its imported judgment takes the task's seat
        if record.kind == "preference" and opened:
            record = _opened(record)
        specs.append(NewTask(
            prompt=prompt, responses=[NewResponse(text=text, source=source) for text, source in record.responses],
            is_gold=record.gold_ranking is not None,
            status=ComparisonTask.Status.COMPLETE if judged else ComparisonTask.Status.OPEN,
            judgments_count=1 if judged else 0,
        ))
        with_tasks.append(record)
    created = tasks_create(project=project, tasks=specs, batch_size=BATCH)
    for made, record in zip(created, with_tasks):
        task, rows = made.task, made.responses
        if record.gold_ranking is not None:
            task.gold_ranking = [[rows[i].pk for i in group] for group in record.gold_ranking]
        if record.kind == "preference" and opened:
            # A reference, not gold: the task stays an ordinary one (served, completed by its overlap).
            task.gold_ranking = [[rows[i].pk for i in group] for group in record.ranking]
            result.references += 1
        elif record.kind == "preference":
            judgments.append(Judgment(
                project=project, task=task, source=record.source, counts_for_retrain=result.counts_for_retrain,
                ranking=[[rows[i].pk for i in group] for group in record.ranking],
                shown_order=[row.pk for row in rows], idempotency_key=_dedupe_key(project, record)[1],
            ))
    answered = [made.task for made in created if made.task.gold_ranking is not None]
    ComparisonTask.objects.bulk_update(answered, ["gold_ranking"], batch_size=BATCH)
    Judgment.objects.bulk_create(judgments, batch_size=BATCH)
    pairs = [pair for judgment in judgments for pair in preference_pairs_build(judgment=judgment)]
    PreferencePair.objects.bulk_create(pairs, batch_size=BATCH)
    Demonstration.objects.bulk_create(demos, batch_size=BATCH)
    result.responses += sum(len(c.responses) for c in created)
    result.tasks += len(created)
    result.judgments += len(judgments)
    result.pairs += len(pairs)
    result.demonstrations += len(demos)
    result.open_tasks += sum(1 for c in created if c.task.status == ComparisonTask.Status.OPEN and not c.task.is_gold)


def project_data_import(
    *, project: Project, stream: IO[bytes], filename: str, user: AbstractUser | None = None,
    source: str = "", max_bytes: int | None = None, fmt: str = "auto", skip_invalid: bool = False,
    dry_run: bool = False, preferences: str = PREFERENCES[0], count_for_retrain: bool = False,
    on_chunk: Callable[[int], None] | None = None,
) -> ImportResult:
    """Validate the whole file, then write it in one transaction. Raises DataImportError with line numbers.
    fmt: one of FORMATS ("auto" detects each row's); skip_invalid: write the valid records and return
    the others in result.rejects instead of failing. dry_run: do all of it, then roll the transaction
    back, so the counts (duplicates included) are exactly what the import would write; nothing is kept.
    preferences: one of PREFERENCES (see the module docstring); count_for_retrain: the imported
    judgments count toward the project's retrain_min_judgments (default: they do not). on_chunk: called
    with each chunk's count of valid records once it is written (a background job's progress)."""
    import_options_check(project=project, preferences=preferences)
    limit = max_bytes or settings.PAIRWISE_MAX_IMPORT_BYTES
    import_upload_check(filename=filename, size=getattr(stream, "size", None), max_bytes=limit)
    default_source = source or f"import:{filename}"[:255]
    result = ImportResult(dry_run=dry_run, preferences=preferences, counts_for_retrain=count_for_retrain)
    kinds: set[str] = set()
    with transaction.atomic():  # chunk by chunk as the file is read; a DataImportError rolls all of it back
        for records in import_records_chunks(stream=stream, filename=filename, project=project,
                                             default_source=default_source, limit=limit, fmt=fmt,
                                             skip_invalid=skip_invalid, rejects=result.rejects):
            result.preview = result.preview or _preview(records)
            read = len(records)
            records = _drop_duplicates(project, records, result, preferences)  # earlier chunks are in the table
            prompts = _prompts(project, records, result)
            _write(project, records, prompts, result)
            kinds.update(r.kind for r in records)
            if on_chunk is not None:
                on_chunk(read)
        result.skipped_invalid = len(result.rejects)
        result.project_open_tasks = ComparisonTask.objects.filter(
            project=project, status=ComparisonTask.Status.OPEN, is_gold=False).count()
        # The skipped rows (without their text) are kept in the batch's JSON: no schema change needed.
        kept = import_issues_list(result.rejects[:BATCH_REJECTS_KEPT])
        batch = ImportBatch.objects.create(
            project=project, filename=filename[:255], kind=",".join(sorted(kinds) or ["none"]),
            created={**result.as_dict(), **({"rejects": kept} if kept else {})},
            skipped_duplicates=result.skipped_duplicates, created_by=user,
        )
        result.batch_id = batch.pk
        if dry_run:
            transaction.set_rollback(True)
            result.batch_id = None
    return result


def import_options_check(*, project: Project, preferences: str) -> None:
    """The choices refused before a byte is read (a background job checks them before it is queued)."""
    if preferences not in PREFERENCES:
        raise DataImportError([ImportIssue(0, "preferences", f"must be one of {', '.join(PREFERENCES)}")])
    if preferences == "open" and project.mode == Project.Mode.DEMONSTRATE:
        raise DataImportError([ImportIssue(0, "preferences", "a demonstrate project asks for demonstrations, not "
                                                             "rankings: open preference data in a pairwise or rank project")])
