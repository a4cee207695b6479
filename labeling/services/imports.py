"""Getting data in: one service behind the admin upload, the API and `manage.py import_project_data`.

Accepted, as JSONL, JSON (one record per line, or an array of records) or CSV, each optionally
gzipped, one record per line/row:
  - a prompt:                 {"id"?, "prompt": "..."} or {"id"?, "messages": [{"role", "content"}, ...]}
  - a prompt with responses:  {"prompt": ..., "responses": ["...", {"text": "...", "source": "..."}]}
                              optional "gold_ranking": tie groups of response indices, best first
  - a preference record:      {"id", "prompt", "chosen", "rejected", "source"?} (the ../shared/datasets shape),
                              stored as a judgment from a named external source plus its pair
  - a demonstration:          {"prompt": ..., "demonstration": "..."}

The whole file is parsed and validated first, every problem reported with its line number, and only
then written in one transaction with bulk inserts: an import is all or nothing.

Uploads are refused by name (.jsonl, .json, .csv, optionally .gz) and by content: NUL bytes mean
binary data, a .gz name must hold gzip data, and the size limit counts bytes after decompression.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import zlib
from dataclasses import dataclass, field
from typing import IO, Any, Iterator

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import transaction

from labeling.models import (
    ComparisonTask, Demonstration, ImportBatch, Judgment, PreferencePair, Project, Prompt,
)
from labeling.ranking import RankingError, ranking_validate
from labeling.services.judgments import preference_pairs_build
from labeling.services.tasks import NewResponse, NewTask, tasks_create

MAX_REPORTED_ISSUES = 100
CHAT_ROLES = {"system", "user", "assistant"}
BATCH = 2000
SUFFIXES = (".jsonl", ".json", ".csv")
GZIP_MAGIC = b"\x1f\x8b"
_SPACE = re.compile(r"\s*")
MULTIPART_ALLOWANCE = 1024 * 1024  # boundaries and the other form fields around the file


@dataclass
class ImportIssue:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""  # line 0: the file as a whole
        return f"{where}{self.field}: {self.message}"


class DataImportError(Exception):
    def __init__(self, issues: list[ImportIssue]):
        self.issues = issues
        super().__init__("; ".join(str(issue) for issue in issues[:5]))


@dataclass
class ImportResult:
    prompts: int = 0
    responses: int = 0
    tasks: int = 0
    judgments: int = 0
    pairs: int = 0
    demonstrations: int = 0
    skipped_duplicates: int = 0
    batch_id: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return dict(self.__dict__)


@dataclass
class Record:
    line: int
    kind: str  # prompt | responses | preference | demonstration
    prompt_key: str
    text: str = ""
    messages: list[dict[str, str]] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    responses: list[tuple[str, str]] = field(default_factory=list)
    gold_ranking: list[list[int]] | None = None
    record_id: str = ""
    source: str = ""
    demonstration: str = ""


class _Invalid(Exception):
    def __init__(self, field_name: str, message: str):
        self.field, self.message = field_name, message


# --- reading ---------------------------------------------------------------------------------

def _file_error(message: str) -> DataImportError:
    return DataImportError([ImportIssue(0, "file", message)])


def import_upload_check(*, filename: str | None = None, size: int | None = None, max_bytes: int | None = None) -> None:
    """What is refused before a byte is read: a name that is not JSONL/JSON/CSV (optionally .gz),
    and a size over the limit. Views call it with the request's size before Django stores the body."""
    limit = max_bytes or settings.PAIRWISE_MAX_IMPORT_BYTES
    if filename is not None and not filename.lower().removesuffix(".gz").endswith(SUFFIXES):
        raise _file_error(f"must be a .jsonl, .json or .csv file (optionally .gz), not {filename[-80:]!r}")
    if size is not None and size > limit:
        raise _file_error(f"file is larger than the limit of {limit} bytes")


def import_request_check(*, content_length: str | None) -> None:
    """Refuse a request body too big to hold a file within the limit (CONTENT_LENGTH as the client
    sent it), before Django stores it."""
    size = int(content_length) if content_length and content_length.isdigit() else 0
    import_upload_check(size=max(0, size - MULTIPART_ALLOWANCE))


class _LimitedReader(io.RawIOBase):
    """Counts bytes after decompression, so a small gzip bomb cannot blow past the limit, and
    refuses binary data: no JSONL/JSON/CSV text in UTF-8 holds a NUL byte."""

    def __init__(self, raw: IO[bytes], limit: int):
        self.raw, self.limit, self.count = raw, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.raw.read(len(buffer))
        if b"\x00" in data:
            offset = self.count + data.index(b"\x00")
            raise _file_error(f"is binary, not JSONL/JSON/CSV text (a NUL byte at offset {offset})")
        self.count += len(data)
        if self.count > self.limit:
            raise _file_error(f"file is larger than the limit of {self.limit} bytes")
        buffer[: len(data)] = data
        return len(data)


def _open_text(stream: IO[bytes], filename: str, limit: int) -> io.TextIOWrapper:
    head = stream.read(2)
    stream.seek(0)
    if filename.lower().endswith(".gz") and head != GZIP_MAGIC:
        raise _file_error("is named .gz but does not hold gzip data")
    raw: IO[bytes] = gzip.GzipFile(fileobj=stream) if head == GZIP_MAGIC else stream
    return io.TextIOWrapper(io.BufferedReader(_LimitedReader(raw, limit)), encoding="utf-8", newline="")


def _jsonl_rows(text: io.TextIOWrapper) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, _Invalid("json", f"invalid JSON: {exc.msg} at column {exc.colno}")


def _json_rows(text: io.TextIOWrapper) -> Iterator[tuple[int, Any]]:
    """A .json file: an array of records, each numbered by the line it starts on, or JSON lines."""
    content = text.read()
    position = _SPACE.match(content).end()
    if not content.startswith("[", position):
        yield from _jsonl_rows(io.StringIO(content))
        return
    decoder, counted, line = json.JSONDecoder(), 0, 1

    def line_of(at: int) -> int:  # positions only grow: count newlines incrementally
        nonlocal counted, line
        line, counted = line + content.count("\n", counted, at), at
        return line

    position = _SPACE.match(content, position + 1).end()
    if content.startswith("]", position):
        return
    while True:
        try:
            item, end = decoder.raw_decode(content, position)
        except json.JSONDecodeError as exc:
            yield line_of(exc.pos), _Invalid("json", f"invalid JSON: {exc.msg} at column {exc.colno}")
            return
        yield line_of(position), item
        position = _SPACE.match(content, end).end()
        if content.startswith("]", position):
            return
        if not content.startswith(",", position):
            yield line_of(position), _Invalid("json", "expected ',' or ']' after a record")
            return
        position = _SPACE.match(content, position + 1).end()


def _csv_rows(text: io.TextIOWrapper) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(text)
    if not reader.fieldnames or "prompt" not in reader.fieldnames:
        yield 1, _Invalid("prompt", "CSV header must have a 'prompt' column")
        return
    response_cols = sorted((c for c in reader.fieldnames if c.startswith("response")), key=_column_order)
    for row in reader:
        row = {key: value for key, value in row.items() if key is not None}
        record: dict[str, Any] = {k: v for k, v in row.items() if v not in (None, "") and not k.startswith("response")}
        responses = [row[col] for col in response_cols if row.get(col)]
        if responses:
            record["responses"] = responses
        yield reader.line_num, record


def _column_order(name: str) -> tuple[int, str]:
    digits = "".join(ch for ch in name if ch.isdigit())
    return (int(digits) if digits else 0, name)


# --- validation ------------------------------------------------------------------------------

def _text(value: Any, field_name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(field_name, "must be a non-empty string")
    if "\x00" in value:
        raise _Invalid(field_name, "contains a NUL character")
    if len(value) > settings.PAIRWISE_MAX_TEXT_CHARS:
        raise _Invalid(field_name, f"is longer than {settings.PAIRWISE_MAX_TEXT_CHARS} characters")
    return value


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise _Invalid("messages", "must be a non-empty list of {role, content}")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or message.get("role") not in CHAT_ROLES:
            raise _Invalid(f"messages[{i}].role", f"must be one of {sorted(CHAT_ROLES)}")
        out.append({"role": message["role"], "content": _text(message.get("content"), f"messages[{i}].content")})
    return out


def _content_key(text: str, messages: list | None) -> str:
    payload = json.dumps(messages, sort_keys=True) if messages else text
    return "sha1:" + hashlib.sha1(payload.encode("utf-8")).hexdigest()


def _record(line: int, data: Any, project: Project, default_source: str) -> Record:
    if isinstance(data, _Invalid):
        raise data
    if not isinstance(data, dict):
        raise _Invalid("record", "must be a JSON object")
    messages = _messages(data["messages"]) if "messages" in data else None
    if messages is None and "prompt" not in data:
        raise _Invalid("prompt", "is required (or give 'messages')")
    text = _text(data["prompt"], "prompt") if "prompt" in data else ""
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _Invalid("metadata", "must be an object")
    record_id = str(data.get("id") or data.get("external_id") or "")
    if len(record_id) > 255:
        raise _Invalid("id", "is longer than 255 characters")
    source = str(data.get("source") or default_source)[:255]
    content_key = _content_key(text, messages)
    record = Record(line=line, kind="prompt", prompt_key=content_key, text=text, messages=messages,
                    metadata=metadata, record_id=record_id, source=source)
    if "chosen" in data or "rejected" in data:
        record.kind = "preference"
        record.responses = [(_text(data.get("chosen"), "chosen"), source), (_text(data.get("rejected"), "rejected"), source)]
        if not record_id:
            raise _Invalid("id", "is required for preference records (it makes re-imports skip duplicates)")
        return record
    record.prompt_key = record_id or content_key
    if "demonstration" in data:
        record.kind = "demonstration"
        record.demonstration = _text(data["demonstration"], "demonstration")
        return record
    if "responses" in data:
        record.kind = "responses"
        record.responses = _responses(data["responses"], project, source)
        if data.get("gold_ranking") is not None:
            try:
                record.gold_ranking = ranking_validate(data["gold_ranking"], range(len(record.responses)))
            except RankingError as exc:
                raise _Invalid("gold_ranking", str(exc)) from None
    return record


def _responses(value: Any, project: Project, source: str) -> list[tuple[str, str]]:
    if not isinstance(value, list):
        raise _Invalid("responses", "must be a list")
    if len(value) != project.responses_per_task:
        raise _Invalid("responses", f"has {len(value)} responses; this project shows {project.responses_per_task} per task")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, dict):
            out.append((_text(item.get("text"), f"responses[{i}].text"), str(item.get("source") or source)[:255]))
        else:
            out.append((_text(item, f"responses[{i}]"), source))
    return out


def _parse(stream: IO[bytes], filename: str, project: Project, default_source: str, limit: int) -> list[Record]:
    name = filename.lower().removesuffix(".gz")
    records, issues = [], []
    try:
        text = _open_text(stream, filename, limit)
        rows = _csv_rows(text) if name.endswith(".csv") else _json_rows(text) if name.endswith(".json") else (
            _jsonl_rows(text))
        for line, data in rows:
            try:
                records.append(_record(line, data, project, default_source))
            except _Invalid as bad:
                issues.append(ImportIssue(line, bad.field, bad.message))
                if len(issues) >= MAX_REPORTED_ISSUES:
                    break
    except UnicodeDecodeError as exc:
        issues.append(ImportIssue(0, "file", f"not UTF-8 text ({exc.reason})"))
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        issues.append(ImportIssue(0, "file", f"unreadable (a damaged or truncated gzip file?): {exc}"))
    except csv.Error as exc:
        issues.append(ImportIssue(0, "file", f"unreadable CSV: {exc}"))
    if issues:
        raise DataImportError(issues)
    if not records:
        raise DataImportError([ImportIssue(0, "file", "contains no records")])
    return records


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
        if record.kind == "prompt":
            continue
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
            chosen, rejected = rows
            # Identical texts are a tie: stored, but they give no pair.
            ranking = [[chosen.pk, rejected.pk]] if chosen.text == rejected.text else [[chosen.pk], [rejected.pk]]
            judgments.append(Judgment(
                project=project, task=task, source=record.source, ranking=ranking,
                shown_order=[chosen.pk, rejected.pk], idempotency_key=_dedupe_key(project, record)[1],
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
    source: str = "", max_bytes: int | None = None,
) -> ImportResult:
    """Validate the whole file, then write it in one transaction. Raises DataImportError with line numbers."""
    limit = max_bytes or settings.PAIRWISE_MAX_IMPORT_BYTES
    import_upload_check(filename=filename, size=getattr(stream, "size", None), max_bytes=limit)
    default_source = source or f"import:{filename}"[:255]
    records = _parse(stream, filename, project, default_source, limit)
    result = ImportResult()
    with transaction.atomic():
        records = _drop_duplicates(project, records, result)
        prompts = _prompts(project, records, result)
        _write(project, records, prompts, result)
        kinds = sorted({r.kind for r in records}) or ["none"]
        batch = ImportBatch.objects.create(
            project=project, filename=filename[:255], kind=",".join(kinds), created=result.as_dict(),
            skipped_duplicates=result.skipped_duplicates, created_by=user,
        )
        result.batch_id = batch.pk
    return result
