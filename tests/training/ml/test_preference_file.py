"""Preference files: a bad line is named by path and line number, a file that is not what its name
says is refused. Pure Python."""
from __future__ import annotations

import pytest

from training.ml.preference_file import read_preference_file


def test_a_bad_preference_line_is_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"d.jsonl:3: not an object"):
        read_preference_file(path)
    path.write_text('{"prompt": "p", "chosen": 1}\n')
    assert read_preference_file(path) == [{"prompt": "p", "chosen": 1}]  # no fields asked for: any object
    with pytest.raises(ValueError, match=r"d.jsonl:1: missing or non-string chosen, rejected"):
        read_preference_file(path, ("prompt", "chosen", "rejected"))
    broken = tmp_path / "d.jsonl.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=r"d.jsonl.gz: cannot read"):
        read_preference_file(broken)
