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

The whole file is parsed and validated first (labeling.services.import_parsing), every problem reported
with its line number, and only then written in one transaction with bulk inserts: an import is all or
nothing. With skip_invalid the valid records are written (still in one transaction) and the rows
left out come back in ImportResult.rejects, each with its error; the ImportBatch keeps them too.

Uploads are refused by name (.jsonl, .json, .csv, optionally .gz) and by content: NUL bytes mean
binary data, a .gz name must hold gzip data, and the size limit counts bytes after decompression.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import IO, Any

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import transaction

from labeling.models import (
    ComparisonTask, Demonstration, ImportBatch, Judgment, PreferencePair, Project, Prompt,
)
from labeling.services.import_parsing import (  # the checks and the error are part of this module's API
    FORMATS, DataImportError, ImportIssue, Record, import_records_parse, import_request_check, import_upload_check,
)
from labeling.services.judgments import preference_pairs_build
from labeling.services.tasks import NewResponse, NewTask, tasks_create

__all__ = ["FORMATS", "DataImportError", "ImportIssue", "ImportResult", "import_request_check",
           "import_upload_check", "project_data_import"]

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
    batch_id: int | None = None
    dry_run: bool = False
    rejects: list[ImportIssue] = field(default_factory=list)
    preview: list[dict[str, Any]] = field(default_factory=list)  # the first records as parsed

    def as_dict(self) -> dict[str, int | None]:
        """The counts (and batch id); the rejects and the preview are apart."""
        return {key: value for key, value in self.__dict__.items() if key not in ("rejects", "preview")}


PREVIEW_ROWS = 10
PREVIEW_CHARS = 300


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


def _dedupe_key(project: Project, record: Record) -> tuple[str, str]:
    """(which table decides, key): preference records by their id, demonstrations by content,
    everything else by the prompt's external id."""
    if record.kind == "preference":
        return "judgment", _import_key(project, record.record_id)
    if record.kind == "demonstration":
        return "demonstration", _import_key(project, record.prompt_key, record.demonstration)
    return "prompt", record.prompt_key


def _drop_duplicates(project: Project, records: list[Record], result: ImportResult) -> list[Record]:
    keys = [_dedupe_key(project, r) for r in records]
    wanted = {table: [k for t, k in keys if t == table] for table in ("prompt", "judgment", "demonstration")}
    taken = {
        "prompt": _existing(Prompt, "external_id", wanted["prompt"], project=project),
        "judgment": _existing(Judgment, "idempotency_key", wanted["judgment"]),
        "demonstration": _existing(Demonstration, "idempotency_key", wanted["demonstration"]),
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
    result.prompts = len(new)
    return by_key


def _write(project: Project, records: list[Record], prompts: dict[str, Prompt], result: ImportResult) -> None:
    specs, with_tasks, judgments, demos = [], [], [], []
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
        is_preference = record.kind == "preference"
        specs.append(NewTask(
            prompt=prompt, responses=[NewResponse(text=text, source=source) for text, source in record.responses],
            is_gold=record.gold_ranking is not None,
            status=ComparisonTask.Status.COMPLETE if is_preference else ComparisonTask.Status.OPEN,
            judgments_count=1 if is_preference else 0,
        ))
        with_tasks.append(record)
    created = tasks_create(project=project, tasks=specs, batch_size=BATCH)
    for made, record in zip(created, with_tasks):
        task, rows = made.task, made.responses
        if record.gold_ranking is not None:
            task.gold_ranking = [[rows[i].pk for i in group] for group in record.gold_ranking]
        if record.kind == "preference":
            judgments.append(Judgment(
                project=project, task=task, source=record.source,
                ranking=[[rows[i].pk for i in group] for group in record.ranking],
                shown_order=[row.pk for row in rows], idempotency_key=_dedupe_key(project, record)[1],
            ))
    gold = [made.task for made, r in zip(created, with_tasks) if r.gold_ranking is not None]
    ComparisonTask.objects.bulk_update(gold, ["gold_ranking"], batch_size=BATCH)
    Judgment.objects.bulk_create(judgments, batch_size=BATCH)
    pairs = [pair for judgment in judgments for pair in preference_pairs_build(judgment=judgment)]
    PreferencePair.objects.bulk_create(pairs, batch_size=BATCH)
    Demonstration.objects.bulk_create(demos, batch_size=BATCH)
    result.responses, result.tasks = sum(len(c.responses) for c in created), len(created)
    result.judgments, result.pairs, result.demonstrations = len(judgments), len(pairs), len(demos)


def project_data_import(
    *, project: Project, stream: IO[bytes], filename: str, user: AbstractUser | None = None,
    source: str = "", max_bytes: int | None = None, fmt: str = "auto", skip_invalid: bool = False,
    dry_run: bool = False,
) -> ImportResult:
    """Validate the whole file, then write it in one transaction. Raises DataImportError with line numbers.
    fmt: one of FORMATS ("auto" detects each row's); skip_invalid: write the valid records and return
    the others in result.rejects instead of failing. dry_run: do all of it, then roll the transaction
    back, so the counts (duplicates included) are exactly what the import would write; nothing is kept."""
    limit = max_bytes or settings.PAIRWISE_MAX_IMPORT_BYTES
    import_upload_check(filename=filename, size=getattr(stream, "size", None), max_bytes=limit)
    default_source = source or f"import:{filename}"[:255]
    parsed = import_records_parse(stream=stream, filename=filename, project=project, default_source=default_source,
                                  limit=limit, fmt=fmt, skip_invalid=skip_invalid)
    records = parsed.records
    result = ImportResult(skipped_invalid=len(parsed.rejects), rejects=parsed.rejects, dry_run=dry_run,
                          preview=_preview(records))
    with transaction.atomic():
        records = _drop_duplicates(project, records, result)
        prompts = _prompts(project, records, result)
        _write(project, records, prompts, result)
        kinds = sorted({r.kind for r in records}) or ["none"]
        # The skipped rows (without their text) are kept in the batch's JSON: no schema change needed.
        kept = [{"line": i.line, "field": i.field, "message": i.message} for i in result.rejects[:BATCH_REJECTS_KEPT]]
        batch = ImportBatch.objects.create(
            project=project, filename=filename[:255], kind=",".join(kinds),
            created={**result.as_dict(), **({"rejects": kept} if kept else {})},
            skipped_duplicates=result.skipped_duplicates, created_by=user,
        )
        result.batch_id = batch.pk
        if dry_run:
            transaction.set_rollback(True)
            result.batch_id = None
    return result
