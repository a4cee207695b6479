"""How every bench hands back what it measured: one JSON document on stdout (the last thing it prints,
so a parent bench or a person can take it from there), the same text in --json PATH when asked, and
progress rows on stderr while it runs."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def emit(result: Any, json_path: str | Path | None = None, *, indent: int | None = 2) -> None:
    """Print the result as JSON (indent None: one line, for a parent that reads the last line) and
    write the same text to json_path when given."""
    text = json.dumps(result, indent=indent)
    print(text, flush=True)
    if json_path:
        Path(json_path).write_text(text + "\n")


def progress(row: dict[str, Any]) -> None:
    """One JSON line on stderr as a long bench finishes a step (stdout keeps the result alone)."""
    print(json.dumps(row), file=sys.stderr, flush=True)
