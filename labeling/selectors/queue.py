"""Reads for the annotator's queue: task payloads in the order shown, progress, markdown rendering."""
from __future__ import annotations

import hashlib
import json

import nh3
from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q
from markdown_it import MarkdownIt

from labeling.byte_lru import ByteBoundedLRU
from labeling.models import Assignment, ComparisonTask, Judgment, Membership, Project

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table").enable("strikethrough")
_ALLOWED_TAGS = {
    "p", "br", "hr", "em", "strong", "s", "del", "code", "pre", "blockquote", "ul", "ol", "li", "a",
    "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "img",
}
# No style attributes: markdown-it writes column alignment as style="text-align:…", which the CSP
# (no inline style) refuses, one violation per cell; the tables lose their alignment instead.
_ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "img": {"alt", "title"}, "ol": {"start"}, "code": {"class"}}
# Rendered HTML by a digest of its source (the source itself is not kept), within
# PAIRWISE_MARKDOWN_CACHE_BYTES per process: texts run to a million characters each.
_rendered = ByteBoundedLRU()


def markdown_render(text: str) -> str:
    """Markdown to HTML that is safe to insert: raw HTML in the source is escaped by markdown-it
    (html disabled) and nh3 then drops anything outside a small allow-list, including
    javascript: links and every event-handler attribute. Images keep no src, so nothing loads."""
    key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    html = _rendered.get(key)
    if html is None:
        html = nh3.clean(
            _markdown.render(text), tags=_ALLOWED_TAGS, attributes=_ALLOWED_ATTRIBUTES,
            url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer nofollow",
        )
        _rendered.put(key, html, max_bytes=settings.PAIRWISE_MARKDOWN_CACHE_BYTES)
    return html


_PAYLOAD_SQL = """
SELECT t.id, p.id, p.text, p.messages, r.id, r.text
FROM labeling_comparisontask t JOIN labeling_prompt p ON p.id = t.prompt_id
LEFT JOIN labeling_taskresponse s ON s.task_id = t.id LEFT JOIN labeling_response r ON r.id = s.response_id
WHERE t.id IN ({ids})
"""


def assignment_payloads(*, assignments: list[Assignment]) -> list[dict]:
    """What the labeling page needs per assignment, responses in the assignment's shown order.

    One hand-written query for any number of assignments (hot path); gold status is
    deliberately left out."""
    if not assignments:
        return []
    prompts, texts = _task_texts(task_ids=[a.task_id for a in assignments])
    return [
        {
            "assignment": a.pk,
            "task": a.task_id,
            "expires_at": a.expires_at.isoformat(),
            "prompt": _prompt_payload(*prompts[a.task_id]),
            "responses": [_response_payload(rid, texts[rid]) for rid in a.shown_order if rid in texts],
        }
        for a in assignments
    ]


def _task_texts(*, task_ids: list[int]) -> tuple[dict[int, tuple], dict[int, str]]:
    """({task id: (prompt id, prompt text, messages)}, {response id: text}) in one query."""
    task_ids = sorted(set(task_ids))
    prompts, texts = {}, {}
    with connection.cursor() as cursor:
        cursor.execute(_PAYLOAD_SQL.format(ids=", ".join(["%s"] * len(task_ids))), task_ids)
        for task_id, prompt_id, prompt_text, messages, response_id, response_text in cursor.fetchall():
            prompts[task_id] = (prompt_id, prompt_text, _json_value(messages))
            if response_id is not None:
                texts[response_id] = response_text
    return prompts, texts


def judgment_last_payload(*, annotator: AbstractUser, project: Project) -> dict | None:
    """The annotator's newest current judgment in the project, as the labeling page shows it to be
    revised: the task as it was shown (same order) and the verdict given. Off the hot path (page load)."""
    judgment = (Judgment.objects.filter(project=project, annotator=annotator)
                .exclude(Exists(Judgment.objects.filter(supersedes_id=OuterRef("pk"))))
                .order_by("-id").first())
    if judgment is None:
        return None
    prompts, texts = _task_texts(task_ids=[judgment.task_id])
    return {
        "judgment": judgment.pk,
        "task": judgment.task_id,
        "prompt": _prompt_payload(*prompts[judgment.task_id]),
        "responses": [_response_payload(rid, texts[rid]) for rid in judgment.shown_order if rid in texts],
        "ranking": judgment.ranking, "both_bad": judgment.both_bad, "likert": judgment.likert,
        "flags": judgment.flags, "rationale": judgment.rationale,
    }


def _json_value(value):
    # psycopg2 decodes jsonb itself; SQLite hands back the stored text.
    return json.loads(value) if isinstance(value, str) else value


def _prompt_payload(prompt_id: int, text: str, messages) -> dict:
    messages = messages if isinstance(messages, list) else None
    return {
        "id": prompt_id,
        "html": markdown_render(text) if text else "",
        "messages": [
            {"role": str(m.get("role", "")), "html": markdown_render(str(m.get("content", "")))}
            for m in messages if isinstance(m, dict)
        ] if messages else None,
    }


def _response_payload(response_id: int, text: str) -> dict:
    # The source model name is withheld so annotators cannot favour a model they recognise.
    return {"id": response_id, "html": markdown_render(text)}


def annotator_progress(*, annotator: AbstractUser, project: Project) -> dict:
    """Off the hot path (page load, project list): the annotator's own count and the project's."""
    done = Assignment.objects.filter(
        annotator=annotator, project=project, state=Assignment.State.SUBMITTED
    ).count()
    tasks = project.tasks.filter(is_gold=False).aggregate(
        total=Count("id"), complete=Count("id", filter=Q(status=ComparisonTask.Status.COMPLETE))
    )
    return {"done": done, "tasks_total": tasks["total"], "tasks_complete": tasks["complete"]}


def projects_for_member(*, user: AbstractUser) -> list[tuple[Project, str]]:
    """The live projects the user is a member of, with their role (superusers: every project, as admin)."""
    projects = Project.objects.filter(deleted_at__isnull=True).order_by("name")
    if user.is_superuser:
        return [(project, Membership.Role.ADMIN) for project in projects]
    roles = dict(Membership.objects.filter(user=user).values_list("project_id", "role"))
    return [(project, roles[project.pk]) for project in projects.filter(pk__in=roles)]
