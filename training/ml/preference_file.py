"""Preference files: gzip or plain JSONL of {id, prompt, chosen, rejected, source} (the shape of
../shared/datasets, and of what evaluate_reward_model and the evaluation API read). Pure Python, so
a web process can parse an upload without loading torch."""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

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


def parse_preference_lines(lines: Iterable[str], source: str, fields: Sequence[str] = ()) -> list[dict[str, Any]]:
    """JSONL lines (blank ones skipped) -> objects whose `fields` are strings; a bad line is a
    ValueError naming "source:line", the line numbered as an editor shows it."""
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{source}:{number}: not an object")
        missing = [k for k in fields if not isinstance(record.get(k), str)]
        if missing:
            raise ValueError(f"{source}:{number}: missing or non-string {', '.join(missing)}")
        records.append(record)
    return records


def parse_preference_upload(raw: bytes, source: str, fields: Sequence[str] = PAIR_FIELDS) -> list[dict[str, Any]]:
    """An uploaded file's bytes, gzip or plain -> records (parse_preference_lines); a ValueError says
    what is wrong. Lines end at "\n" only: a string may hold U+2028 and friends unescaped."""
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{source}: bad gzip ({exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{source}: not UTF-8 ({exc})") from None
    return parse_preference_lines(text.split("\n"), source, fields)
