"""Template filters of the training pages."""
from __future__ import annotations

from datetime import datetime

from django import template
from django.utils.dateparse import parse_datetime

register = template.Library()


@register.filter
def iso_datetime(value: str | datetime | None) -> datetime | None:
    """An ISO 8601 string (the JSON-shaped dicts of training.selectors.runs) as a datetime, so the
    pages format it with `date` and `timesince` rather than showing the raw string."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        return parse_datetime(str(value))
    except ValueError:
        return None
