"""labeling.upload_limits: the one bounded reader every upload path shares (pure Python, no database)."""
from __future__ import annotations

import gzip
import io
import json
import tracemalloc

import pytest

from labeling.upload_limits import (
    ByteBudget, JsonTooDeep, UploadRefused, bounded_lines, bounded_stream, json_loads, request_size_check,
)


def test_a_gzip_bomb_is_inflated_only_until_the_budget_is_spent():
    bomb, budget = io.BytesIO(gzip.compress(b"a" * (50 * 1024 * 1024), 9)), ByteBudget(100_000)
    tracemalloc.start()
    try:
        with pytest.raises(UploadRefused, match="larger than the limit of 100000 bytes"):
            bounded_stream(bomb, budget).read()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 100_000 < budget.used <= 100_000 + 64 * 1024  # stopped within one read of the limit
    assert peak < 5 * 1024 * 1024  # the 50 MB were never held


def test_one_budget_is_shared_by_every_stream_read_from_it():
    budget = ByteBudget(1000)
    assert bounded_stream(io.BytesIO(gzip.compress(b"x" * 600)), budget).read() == b"x" * 600
    with pytest.raises(UploadRefused):
        bounded_stream(io.BytesIO(b"y" * 600), budget).read()
    assert budget.used > 1000


def test_streams_are_sniffed_and_checked_by_content():
    assert bounded_stream(io.BytesIO(gzip.compress(b"plain")), ByteBudget(10)).read() == b"plain"
    assert bounded_stream(io.BytesIO(b"plain"), ByteBudget(10)).read() == b"plain"
    with pytest.raises(UploadRefused, match="is named .gz but does not hold gzip data"):
        bounded_stream(io.BytesIO(b"plain"), ByteBudget(10), named_gzip=True)
    with pytest.raises(UploadRefused, match="a NUL byte at offset 3"):
        bounded_stream(io.BytesIO(b"abc\x00"), ByteBudget(10), refuse_nul=True).read()


def test_lines_end_at_newline_only():
    text = '{"a": "x\u2028y"}\n{"b": 1}\r\n'.encode()
    assert list(bounded_lines(io.BytesIO(text), ByteBudget(100))) == ['{"a": "x\u2028y"}\n', '{"b": 1}\r\n']


@pytest.mark.parametrize(("length", "limit", "refused"), [
    (None, 10, False), ("", 10, False), ("abc", 10, False), (str(1024 * 1024 + 10), 10, False),
    (str(1024 * 1024 + 11), 10, True),
])
def test_the_declared_request_size_is_checked_with_room_for_the_form(length, limit, refused):
    if refused:
        with pytest.raises(UploadRefused, match="larger than the limit of 10 bytes"):
            request_size_check(content_length=length, limit=limit)
    else:
        request_size_check(content_length=length, limit=limit)


def test_nesting_depth_is_limited_and_brackets_inside_strings_do_not_count():
    assert json_loads(json.dumps({"text": "[" * 5000, "more": "{" * 5000})) == {"text": "[" * 5000, "more": "{" * 5000}
    assert json_loads("[" * 100 + "]" * 100) is not None
    with pytest.raises(JsonTooDeep, match="nested deeper than 100 levels"):
        json_loads("[" * 101 + "]" * 101)
    with pytest.raises(JsonTooDeep):
        json_loads('{"a": ' * 100_000)
    with pytest.raises(json.JSONDecodeError):
        json_loads('{"a": ')
