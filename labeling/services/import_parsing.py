"""Reading an import file: decoding (gzip, size limit, binary refusal), JSONL/JSON/CSV rows (Parquet
and zip in labeling.services.import_files), turning other formats into native records
(import_formats, import_external), and record validation with line-numbered issues. Nothing here
writes; labeling.services.imports writes what this returns. The native shapes are listed there.
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
from labeling.services import import_external, import_formats
from labeling.services.import_files import FileUnreadable, parquet_rows, zip_members
from labeling.services.import_formats import RowInvalid as _Invalid
from labeling.services.import_formats import detect, judgments_lookup, row_object

MAX_REPORTED_ISSUES = 100
RAW_CHARS = 2000  # of a skipped record, echoed back so it can be fixed and imported again
CHAT_ROLES = {"system", "user", "assistant"}
SUFFIXES = (".jsonl", ".json", ".csv")
BINARY_SUFFIXES = (".parquet", ".zip")  # never gzipped: both compress inside
SUFFIXES_SAID = "a .jsonl, .json or .csv file (optionally .gz), a .parquet file or a .zip of a dataset folder"
FORMATS = ("auto", "native", "trl", "trl-chat", "hh", "ranked", "judgments", "label-studio", "argilla")
GZIP_MAGIC = b"\x1f\x8b"
_SPACE = re.compile(r"\s*")
MULTIPART_ALLOWANCE = 1024 * 1024  # boundaries and the other form fields around the file


@dataclass
class ImportIssue:
    line: int
    field: str
    message: str
    raw: str = ""  # the record as read, for the skipped lines of a skip_invalid import

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
    ranking: list[list[int]] | None = None  # of an imported judgment, as tie groups of response indices
    record_id: str = ""
    source: str = ""
    demonstration: str = ""


@dataclass
class ParsedFile:
    records: list[Record]
    rejects: list[ImportIssue]  # rows left out by a skip_invalid import, each with its error


# --- reading ---------------------------------------------------------------------------------

def _file_error(message: str) -> DataImportError:
    return DataImportError([ImportIssue(0, "file", message)])


def import_upload_check(*, filename: str | None = None, size: int | None = None, max_bytes: int | None = None) -> None:
    """What is refused before a byte is read: a name that is not JSONL/JSON/CSV (optionally .gz),
    and a size over the limit. Views call it with the request's size before Django stores the body."""
    limit = max_bytes or settings.PAIRWISE_MAX_IMPORT_BYTES
    name = (filename or "").lower()
    if filename is not None and not (name.removesuffix(".gz").endswith(SUFFIXES) or name.endswith(BINARY_SUFFIXES)):
        raise _file_error(f"must be {SUFFIXES_SAID}, not {filename[-80:]!r}")
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
            yield number, _Invalid("json", f"invalid JSON: {exc.msg} at column {exc.colno}", raw=line)


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

def _text(value: Any, field_name: str, *, blank: bool = False) -> str:
    """blank: a whitespace-only answer is real data (in hh-rlhf, saying nothing was preferred to a
    harmful reply) and is kept as it is; an empty string is a missing value."""
    if not isinstance(value, str) or not value or not (blank or value.strip()):
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


def _record(line: int, data: dict[str, Any], project: Project, default_source: str) -> Record:
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
        record.responses = [(_text(data.get("chosen"), "chosen", blank=True), source),
                            (_text(data.get("rejected"), "rejected", blank=True), source)]
        # Identical texts are a tie: stored, but they give no pair.
        record.ranking = [[0, 1]] if record.responses[0][0] == record.responses[1][0] else [[0], [1]]
    elif "ranking" in data:  # a judgment of K responses: the ranked/judgments exports, other tools
        record.kind = "preference"
        record.responses = _responses(data.get("responses"), None, source)
        record.ranking = _ranking(data["ranking"], "ranking", len(record.responses))
    if record.kind == "preference":
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
        record.responses = _responses(data["responses"], project.responses_per_task, source)
        if data.get("gold_ranking") is not None:
            record.gold_ranking = _ranking(data["gold_ranking"], "gold_ranking", len(record.responses))
    return record


def _ranking(value: Any, field_name: str, count: int) -> list[list[int]]:
    try:
        return ranking_validate(value, range(count))
    except RankingError as exc:
        raise _Invalid(field_name, str(exc)) from None


def _responses(value: Any, expected: int | None, source: str) -> list[tuple[str, str]]:
    """expected: the project's K for open tasks; a judged task keeps however many it was judged with."""
    if not isinstance(value, list):
        raise _Invalid("responses", "must be a list")
    if expected is not None and len(value) != expected:
        raise _Invalid("responses", f"has {len(value)} responses; this project shows {expected} per task")
    if len(value) < 2 and expected is None:
        raise _Invalid("responses", "a judgment needs at least two responses")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, dict):
            out.append((_text(item.get("text"), f"responses[{i}].text", blank=True), str(item.get("source") or source)[:255]))
        else:
            out.append((_text(item, f"responses[{i}]", blank=True), source))
    return out


def _rows(stream: IO[bytes], filename: str, limit: int) -> Iterator[tuple[int, Any]]:
    name = filename.lower()
    if name.endswith(".zip"):  # lines count on across the members, in name order
        offset = 0
        for member, data in zip_members(stream, limit):
            if not member.lower().removesuffix(".gz").endswith(SUFFIXES + (".parquet",)):
                raise FileUnreadable(f"{member}: the zip archive may hold only .parquet, .jsonl, .json and .csv files")
            last = 0
            for last, row in _rows(data, member, limit):
                yield offset + last, row
            offset += last
        return
    if name.endswith(".parquet"):
        yield from parquet_rows(stream, limit)
        return
    text, name = _open_text(stream, filename, limit), name.removesuffix(".gz")
    yield from _csv_rows(text) if name.endswith(".csv") else _json_rows(text) if name.endswith(".json") else (
        _jsonl_rows(text))


def _convert(fmt: str, data: Any, lookup: dict[str, Any]) -> list[dict[str, Any]]:
    """One row as read -> the native records it holds, in the chosen format or the one it looks like."""
    row = row_object(data)
    kind = detect(row) if fmt == "auto" else fmt
    if kind == "judgments":
        return import_formats.judgments_record(row, lookup)
    converted = {**import_formats.CONVERTERS, **import_external.CONVERTERS}[kind](row)
    for item in converted:
        row_object(item)
    return converted


def _raw(data: Any, bad: _Invalid) -> str:
    text = bad.raw if bad.raw is not None else json.dumps(data, ensure_ascii=False, default=str)
    return text.rstrip("\n")[:RAW_CHARS]


def import_records_parse(
    *, stream: IO[bytes], filename: str, project: Project, default_source: str, limit: int, fmt: str = "auto",
    skip_invalid: bool = False,
) -> ParsedFile:
    """Every record of the file, or DataImportError with every problem (up to MAX_REPORTED_ISSUES) by line.
    skip_invalid: the valid records and the rows left out, each with its error; what makes the whole
    file unreadable (encoding, size, a broken gzip) still fails the import, as does a file with no
    valid record at all."""
    if fmt not in FORMATS:
        raise DataImportError([ImportIssue(0, "format", f"must be one of {', '.join(FORMATS)}")])
    records, issues, fatal = [], [], []
    try:
        rows = list(_rows(stream, filename, limit))
        lookup = judgments_lookup(rows) if fmt in ("auto", "judgments") else {}
        for line, data in rows:
            try:  # a row's records are taken together or not at all
                records.extend([_record(line, item, project, default_source) for item in _convert(fmt, data, lookup)])
            except _Invalid as bad:
                issues.append(ImportIssue(line, bad.field, bad.message, _raw(data, bad)))
                if not skip_invalid and len(issues) >= MAX_REPORTED_ISSUES:
                    break
    except FileUnreadable as exc:
        fatal.append(ImportIssue(0, "file", str(exc)))
    except UnicodeDecodeError as exc:
        fatal.append(ImportIssue(0, "file", f"not UTF-8 text ({exc.reason})"))
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        fatal.append(ImportIssue(0, "file", f"unreadable (a damaged or truncated gzip file?): {exc}"))
    except csv.Error as exc:
        fatal.append(ImportIssue(0, "file", f"unreadable CSV: {exc}"))
    if fatal or (issues and not (skip_invalid and records)):
        raise DataImportError(fatal or issues[:MAX_REPORTED_ISSUES])
    if not records:
        raise DataImportError([ImportIssue(0, "file", "contains no records")])
    return ParsedFile(records=records, rejects=issues)
