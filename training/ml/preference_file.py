"""Preference files: gzip or plain JSONL of {id, prompt, chosen, rejected, source} (the shape of
../shared/datasets, and of what evaluate_reward_model and the evaluation API read). Pure Python, so
a web process can parse an upload without loading torch; an upload is read within a byte budget
counted after decompression (labeling.upload_limits, the one reader every upload path shares)."""
from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import IO, Any, Iterable, Sequence

from labeling.upload_limits import ByteBudget, JsonTooDeep, UploadRefused, bounded_lines, json_loads

PAIR_FIELDS = ("prompt", "chosen", "rejected")


def read_preference_file(path: str | Path, fields: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Read the shared dataset shape: gzip or plain JSONL of {id, prompt, chosen, rejected, source},
    each line an object whose `fields` are strings. A bad line is a ValueError naming "path:line"."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            return parse_preference_lines(f, str(path), fields)
    except (EOFError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise ValueError(f"{path}: cannot read ({exc})") from None


def parse_preference_lines(lines: Iterable[str], source: str, fields: Sequence[str] = (),
                           max_records: int | None = None) -> list[dict[str, Any]]:
    """JSONL lines (blank ones skipped) -> objects whose `fields` are strings; a bad line is a
    ValueError naming "source:line", the line numbered as an editor shows it. max_records: refuse
    more, as soon as the next one is read."""
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if max_records is not None and len(records) >= max_records:
            raise ValueError(f"{source}: more than {max_records} records")
        try:
            record = json_loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}:{number}: not JSON ({exc.msg})") from None
        except JsonTooDeep as exc:
            raise ValueError(f"{source}:{number}: not JSON ({exc})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{source}:{number}: not an object")
        missing = [k for k in fields if not isinstance(record.get(k), str)]
        if missing:
            raise ValueError(f"{source}:{number}: missing or non-string {', '.join(missing)}")
        records.append(record)
    return records


def parse_preference_upload(stream: IO[bytes], source: str, fields: Sequence[str] = PAIR_FIELDS, *, limit: int,
                            max_records: int | None = None) -> list[dict[str, Any]]:
    """An uploaded file, gzip or plain -> records (parse_preference_lines), read a line at a time
    within `limit` bytes after decompression; a ValueError says what is wrong (a bomb stops at the
    limit, it is never inflated whole). Lines end at "\n" only: a string may hold U+2028 unescaped."""
    try:
        return parse_preference_lines(bounded_lines(stream, ByteBudget(limit)), source, fields, max_records)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{source}: not UTF-8 ({exc.reason})") from None
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{source}: bad gzip ({exc})") from None
    except UploadRefused as exc:  # too large after decompression
        raise ValueError(f"{source}: {exc}") from None
