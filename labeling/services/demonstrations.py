from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from labeling.models import Demonstration, Project, Prompt


def demonstration_create(
    *, project: Project, prompt_id: int, author: AbstractUser | None, text: str, idempotency_key: str | None = None,
) -> Demonstration:
    """Store an ideal response. A retried call with the same key returns the first one."""
    if idempotency_key:
        existing = Demonstration.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing
    if not text.strip():
        raise ValidationError({"text": "must not be empty"})
    if "\x00" in text:
        raise ValidationError({"text": "contains a NUL character"})
    prompt = Prompt.objects.filter(project=project, pk=prompt_id).first()
    if prompt is None:
        raise ValidationError({"prompt": "no such prompt in this project"})
    try:
        with transaction.atomic():
            return Demonstration.objects.create(
                project=project, prompt=prompt, author=author, text=text, idempotency_key=idempotency_key or None,
            )
    except IntegrityError:
        # A concurrent retry with the same key won the race; return what it stored.
        return Demonstration.objects.get(idempotency_key=idempotency_key)
