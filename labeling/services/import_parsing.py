"""Reading an import file: decoding (gzip, size limit, binary refusal: labeling.upload_limits),
JSONL/JSON/CSV rows (Parquet and zip in labeling.services.import_files), turning other formats into
native records (import_formats, import_external), and record validation with line-numbered issues.
Records come out in chunks as the file is read (import_records_chunks), so an import holds one chunk
of parsed rows at a time, never the whole file. Nothing here writes; labeling.services.imports writes
what this returns. The native shapes are listed there.
"""
from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import re
import zipfile
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
from labeling.upload_limits import (
    ByteBudget, JsonTooDeep, UploadRefused, bounded_stream, json_depth_check, json_loads, too_large,
)

MAX_REPORTED_ISSUES = 100
RAW_CHARS = 2000  # of a skipped record, echoed back so it can be fixed and imported again
CHAT_ROLES = {"system", "user", "assistant"}
SUFFIXES = (".jsonl", ".json", ".csv")
BINARY_SUFFIXES = (".parquet", ".zip")  # never gzipped: both compress inside
SUFFIXES_SAID = "a .jsonl, .json or .csv file (optionally .gz), a .parquet file or a .zip of a dataset folder"
FORMATS = ("auto", "native", "trl", "trl-chat", "hh", "ranked", "judgments", "label-studio", "argilla")
_SPACE = re.compile(r"\s*")
CHUNK_ROWS = 10_000  # rows parsed at a time, each chunk written before the next: memory against round trips


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
        raise _file_error(str(too_large(limit)))


def _open_text(stream: IO[bytes], filename: str, budget: ByteBudget) -> io.TextIOWrapper:
    raw = bounded_stream(stream, budget, named_gzip=filename.lower().endswith(".gz"), refuse_nul=True)
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")


def _too_deep(line: int, exc: JsonTooDeep | RecursionError, raw: str | None = None) -> _Invalid:
    why = str(exc) if isinstance(exc, JsonTooDeep) else "nested deeper than this server can read"
    return _Invalid("json", f"invalid JSON at line {line}: {why}", raw=raw)


def _json_problem(exc: json.JSONDecodeError, line: int) -> str:
    """The decoder's message without its dangling "at" ("Invalid control character at"), with where."""
    what = exc.msg.removesuffix(" starting at").removesuffix(" at")
    what = what[:1].lower() + what[1:]
    if what.startswith("invalid control character"):
        what += " (a tab or line break inside a string must be written as \\t or \\n)"
    return f"invalid JSON at line {line}, column {exc.colno}: {what}"


def _jsonl_rows(text: io.TextIOWrapper) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            yield number, json_loads(line)
        except json.JSONDecodeError as exc:
            yield number, _Invalid("json", _json_problem(exc, number), raw=line)
        except JsonTooDeep as exc:
            yield number, _too_deep(number, exc, raw=line[:RAW_CHARS])


def _json_rows(text: io.TextIOWrapper) -> Iterator[tuple[int, Any]]:
    """A .json file: an array of records, each numbered by the line it starts on, or JSON lines.
    The text is held whole (an array has no line boundaries to stream by); its records are not."""
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
            json_depth_check(content[position:end])
        except json.JSONDecodeError as exc:
            at = line_of(exc.pos)
            yield at, _Invalid("json", _json_problem(exc, at))
            return
        except (JsonTooDeep, RecursionError) as exc:
            at = line_of(position)
            yield at, _too_deep(at, exc)
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


def _rows(stream: IO[bytes], filename: str, budget: ByteBudget) -> Iterator[tuple[int, Any]]:
    name = filename.lower()
    if name.endswith(".zip"):  # lines count on across the members, in name order; one budget for all
        offset = 0
        for member, data in zip_members(stream, budget):
            if not member.lower().removesuffix(".gz").endswith(SUFFIXES + (".parquet",)):
                raise FileUnreadable(f"{member}: the zip archive may hold only .parquet, .jsonl, .json and .csv files")
            last = 0
            for last, row in _rows(data, member, budget):
                yield offset + last, row
            offset += last
        return
    if name.endswith(".parquet"):
        yield from parquet_rows(stream, budget)
        return
    text, name = _open_text(stream, filename, budget), name.removesuffix(".gz")
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


class _Enough(Exception):
    """As many problems as an all-or-nothing import reports."""


def import_records_chunks(
    *, stream: IO[bytes], filename: str, project: Project, default_source: str, limit: int, fmt: str = "auto",
    skip_invalid: bool = False, rejects: list[ImportIssue] | None = None, chunk_rows: int = CHUNK_ROWS,
) -> Iterator[list[Record]]:
    """The file's valid records, a chunk at a time as the file is read (only one chunk of parsed rows is
    in memory); the caller writes them in one transaction and rolls it back on DataImportError, raised
    after the last chunk with every problem (up to MAX_REPORTED_ISSUES) by line. Once a row fails an
    all-or-nothing import no more chunks come; the rest is read only to report its problems.
    skip_invalid: the rows left out are added to rejects, each with its error; what makes the whole
    file unreadable (encoding, size, a broken gzip) still fails the import, as does a file with no
    valid record at all."""
    if fmt not in FORMATS:
        raise DataImportError([ImportIssue(0, "format", f"must be one of {', '.join(FORMATS)}")])
    issues: list[ImportIssue] = []
    fatal: list[ImportIssue] = []
    kept = 0
    try:
        rows_in = _rows(stream, filename, ByteBudget(limit))
        while rows := list(itertools.islice(rows_in, chunk_rows)):
            chunk = _chunk_records(rows, fmt, project, default_source, issues, skip_invalid)
            if chunk and (skip_invalid or not issues):
                kept += len(chunk)
                yield chunk
    except _Enough:
        pass
    except (FileUnreadable, UploadRefused) as exc:
        fatal.append(ImportIssue(0, "file", str(exc)))
    except UnicodeDecodeError as exc:
        fatal.append(ImportIssue(0, "file", f"not UTF-8 text ({exc.reason})"))
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:  # gzip.BadGzipFile is an OSError
        fatal.append(ImportIssue(0, "file", f"unreadable (a damaged or truncated gzip file?): {exc}"))
    except csv.Error as exc:
        fatal.append(ImportIssue(0, "file", f"unreadable CSV: {exc}"))
    if fatal or (issues and not (skip_invalid and kept)):
        raise DataImportError(fatal or issues[:MAX_REPORTED_ISSUES])
    if not kept:
        raise DataImportError([ImportIssue(0, "file", "contains no records")])
    if rejects is not None:
        rejects.extend(issues)


def _chunk_records(rows: list[tuple[int, Any]], fmt: str, project: Project, default_source: str,
                   issues: list[ImportIssue], skip_invalid: bool) -> list[Record]:
    lookup = judgments_lookup(rows) if fmt in ("auto", "judgments") else {}
    records: list[Record] = []
    for line, data in rows:
        try:  # a row's records are taken together or not at all
            records.extend([_record(line, item, project, default_source) for item in _convert(fmt, data, lookup)])
        except _Invalid as bad:
            issues.append(ImportIssue(line, bad.field, bad.message, _raw(data, bad)))
            if not skip_invalid and len(issues) >= MAX_REPORTED_ISSUES:
                raise _Enough from None
    return records
