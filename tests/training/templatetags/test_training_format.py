"""training.templatetags.training_format: ISO strings from the runs' JSON-shaped dicts, formatted."""
from __future__ import annotations

from datetime import datetime, timezone

from django.template import Context, Template


def test_iso_strings_render_as_readable_dates():
    template = Template('{% load training_format %}{{ when|iso_datetime|date:"j M, H:i" }}')
    assert template.render(Context({"when": "2026-12-07T05:09:38.123456+00:00"})) == "7 Dec, 05:09"
    assert template.render(Context({"when": datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc)})) == "2 Jan, 03:04"
    assert template.render(Context({"when": "not a date"})) == ""
