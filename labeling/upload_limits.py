"""Reading an upload within a byte budget: one reader for every upload path (imports, the members of a
zip together, .gz at any level, reward-evaluation files). The budget counts bytes after decompression
and is spent as they are read, so a small gzip bomb stops as soon as it passes the limit instead of
inflating first. Pure Python (no Django): labeling's imports and training.ml.preference_file both read
through it, and the web layer checks a request's declared size here before reading its body.
"""
from __future__ import annotations

import gzip
import io
import json
import re
from typing import IO, Any, Iterator

GZIP_MAGIC = b"\x1f\x8b"
MULTIPART_ALLOWANCE = 1024 * 1024  # boundaries and the other form fields around the file
MAX_JSON_DEPTH = 100  # far beyond any record shape; json itself fails near 1000 with a RecursionError
READ_CHUNK = 64 * 1024


class UploadRefused(ValueError):
    """The upload as a whole is refused: too large, binary, or not the gzip its name says."""


def too_large(limit: int) -> UploadRefused:
    return UploadRefused(f"file is larger than the limit of {limit} bytes")


class ByteBudget:
    """One allowance for one upload, shared by every layer and member read from it."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def spend(self, count: int) -> None:
        self.used += count
        if self.used > self.limit:
            raise too_large(self.limit)

    def check(self, count: int) -> None:
        """Refuse now what would not fit (a size a container declares), spending nothing."""
        if self.used + count > self.limit:
            raise too_large(self.limit)


def request_size_check(*, content_length: str | None, limit: int, allowance: int = MULTIPART_ALLOWANCE) -> None:
    """Refuse a request whose declared body (CONTENT_LENGTH as the client sent it) cannot hold a file
    within the limit, before a byte of it is read or stored."""
    size = int(content_length) if content_length and content_length.isdigit() else 0
    if size - allowance > limit:
        raise UploadRefused(f"the request ({size} bytes) is larger than the limit of {limit} bytes")


class _Counted(io.RawIOBase):
    """Spends the budget on every byte read; refuse_nul: no JSONL/JSON/CSV text in UTF-8 holds a NUL."""

    def __init__(self, raw: IO[bytes], budget: ByteBudget, refuse_nul: bool):
        self.raw, self.budget, self.refuse_nul, self.count = raw, budget, refuse_nul, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.raw.read(min(len(buffer), READ_CHUNK))
        if self.refuse_nul and b"\x00" in data:
            offset = self.count + data.index(b"\x00")
            raise UploadRefused(f"is binary, not JSONL/JSON/CSV text (a NUL byte at offset {offset})")
        self.count += len(data)
        self.budget.spend(len(data))
        buffer[: len(data)] = data
        return len(data)


class _Prefixed(io.RawIOBase):
    """The bytes already taken off a stream to sniff it, then the rest: works on streams that cannot seek."""

    def __init__(self, head: bytes, raw: IO[bytes]):
        self.head, self.raw = head, raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        head, self.head = self.head[: len(buffer)], self.head[len(buffer):]
        data = head + self.raw.read(len(buffer) - len(head)) if len(buffer) > len(head) else head
        buffer[: len(data)] = data
        return len(data)


def bounded_stream(stream: IO[bytes], budget: ByteBudget, *, named_gzip: bool = False,
                   refuse_nul: bool = False) -> io.BufferedReader:
    """The upload's bytes, gunzipped when they start with gzip's magic (incrementally: gzip reads at
    most what is asked), each byte after decompression spent from the budget. named_gzip: the name
    says .gz, so anything else is refused. Raises UploadRefused while reading; a damaged gzip is an
    OSError or EOFError as the gzip module raises them."""
    head = stream.read(2)
    if named_gzip and head != GZIP_MAGIC:
        raise UploadRefused("is named .gz but does not hold gzip data")
    raw: IO[bytes] = _Prefixed(head, stream)
    if head == GZIP_MAGIC:
        raw = gzip.GzipFile(fileobj=io.BufferedReader(raw, READ_CHUNK), mode="rb")
    return io.BufferedReader(_Counted(raw, budget, refuse_nul), READ_CHUNK)


def bounded_lines(stream: IO[bytes], budget: ByteBudget) -> Iterator[str]:
    """UTF-8 text lines of an upload (gzip or plain), ended at "\\n" only: a JSON string may hold
    U+2028 and friends unescaped. Read lazily, so only the current line is in memory."""
    return iter(io.TextIOWrapper(bounded_stream(stream, budget), encoding="utf-8", newline="\n"))


class JsonTooDeep(ValueError):
    pass


_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')  # strings (skipped whole) and brackets


def json_depth_check(text: str, max_depth: int = MAX_JSON_DEPTH) -> None:
    """JsonTooDeep when brackets nest deeper than max_depth, so json never hits the recursion limit
    (a RecursionError, a 500). Cheap: only a text with more opening brackets than that is scanned."""
    if text.count("[") + text.count("{") <= max_depth:
        return
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token == "[" or token == "{":
            depth += 1
            if depth > max_depth:
                raise JsonTooDeep(f"nested deeper than {max_depth} levels")
        elif token == "]" or token == "}":
            depth -= 1


def json_loads(text: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads within the depth limit: json.JSONDecodeError or JsonTooDeep (both ValueErrors)."""
    json_depth_check(text, max_depth)
    try:
        return json.loads(text)
    except RecursionError:  # deep already on the caller's stack: still a refusal, never a 500
        raise JsonTooDeep(f"nested deeper than this server can read ({max_depth} levels allowed)") from None
