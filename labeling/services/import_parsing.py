"""Reading an import file: decoding (gzip, size limit, binary refusal), JSONL/JSON/CSV rows, and
record validation with line-numbered issues. Nothing here writes; labeling.services.imports
writes what this returns. The accepted shapes are listed in labeling.services.imports.
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

from labeling.models import Project
from labeling.ranking import RankingError, ranking_validate

MAX_REPORTED_ISSUES = 100
CHAT_ROLES = {"system", "user", "assistant"}
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


def import_records_parse(
    *, stream: IO[bytes], filename: str, project: Project, default_source: str, limit: int,
) -> list[Record]:
    """Every record of the file, or DataImportError with every problem (up to MAX_REPORTED_ISSUES) by line."""
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
