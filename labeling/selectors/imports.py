"""Reads an import needs: the texts a judgments export refers to by id."""
from __future__ import annotations

from typing import Any

from labeling.models import Prompt, Response

CHUNK = 2000


def judgment_sources(*, response_ids: set[int], prompt_ids: set[int]) -> dict[str, dict[int, Any]]:
    """{"responses": {id: (text, source)}, "prompts": {id: (text, messages)}}, fetched in chunks."""
    responses: dict[int, Any] = {}
    ids = sorted(response_ids)
    for start in range(0, len(ids), CHUNK):
        rows = Response.objects.filter(pk__in=ids[start:start + CHUNK]).values_list("pk", "text", "source")
        responses.update((pk, (text, source)) for pk, text, source in rows)
    prompts = {pk: (text, messages) for pk, text, messages in
               Prompt.objects.filter(pk__in=sorted(prompt_ids)).values_list("pk", "text", "messages")}
    return {"responses": responses, "prompts": prompts}
