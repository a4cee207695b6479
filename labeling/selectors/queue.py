"""Reads for the annotator's queue: task payloads in the order shown, progress, markdown rendering."""
from __future__ import annotations

from functools import lru_cache

import nh3
from django.contrib.auth.models import AbstractUser
from django.db.models import Count, Q
from markdown_it import MarkdownIt

from labeling.models import Assignment, ComparisonTask, Membership, Project, Prompt, Response

WORK_ROLES = (Membership.Role.ADMIN, Membership.Role.ANNOTATOR)

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table").enable("strikethrough")
_ALLOWED_TAGS = {
    "p", "br", "hr", "em", "strong", "s", "del", "code", "pre", "blockquote", "ul", "ol", "li", "a",
    "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "img",
}
_ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "img": {"alt", "title"}, "ol": {"start"}, "code": {"class"},
                       "th": {"style"}, "td": {"style"}}


@lru_cache(maxsize=4096)
def markdown_render(text: str) -> str:
    """Markdown to HTML that is safe to insert: raw HTML in the source is escaped by markdown-it
    (html disabled) and nh3 then drops anything outside a small allow-list, including
    javascript: links and every event-handler attribute. Images keep no src, so nothing loads."""
    html = _markdown.render(text)
    return nh3.clean(
        html, tags=_ALLOWED_TAGS, attributes=_ALLOWED_ATTRIBUTES, url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )


def project_for_worker(*, slug: str, user: AbstractUser) -> Project | None:
    """The live project if the user may label in it, in one query (this is on the hot path)."""
    if not user.is_authenticated:
        return None
    if user.is_superuser:
        return Project.objects.filter(slug=slug, deleted_at__isnull=True).first()
    membership = (
        Membership.objects.select_related("project")
        .filter(user=user, project__slug=slug, project__deleted_at__isnull=True, role__in=WORK_ROLES)
        .first()
    )
    return membership.project if membership else None


def assignment_payloads(*, assignments: list[Assignment]) -> list[dict]:
    """What the labeling page needs per assignment, responses in the assignment's shown order.

    One query for any number of assignments; gold status is deliberately left out."""
    response_ids = [rid for a in assignments for rid in a.shown_order]
    responses = {r.pk: r for r in Response.objects.select_related("prompt").filter(pk__in=response_ids)}
    prompt_of = {a.pk: responses[a.shown_order[0]].prompt for a in assignments if a.shown_order and a.shown_order[0] in responses}
    missing = [a.task_id for a in assignments if a.pk not in prompt_of]
    if missing:  # demonstrate mode: tasks without responses
        by_task = {t.pk: t.prompt for t in ComparisonTask.objects.select_related("prompt").filter(pk__in=missing)}
        prompt_of.update({a.pk: by_task[a.task_id] for a in assignments if a.pk not in prompt_of})
    return [
        {
            "assignment": a.pk,
            "task": a.task_id,
            "expires_at": a.expires_at.isoformat(),
            "prompt": _prompt_payload(prompt_of[a.pk]),
            "responses": [_response_payload(responses[rid]) for rid in a.shown_order if rid in responses],
        }
        for a in assignments
    ]


def _prompt_payload(prompt: Prompt) -> dict:
    messages = prompt.messages if isinstance(prompt.messages, list) else None
    return {
        "id": prompt.pk,
        "html": markdown_render(prompt.text) if prompt.text else "",
        "messages": [
            {"role": str(m.get("role", "")), "html": markdown_render(str(m.get("content", "")))}
            for m in messages if isinstance(m, dict)
        ] if messages else None,
    }


def _response_payload(response: Response) -> dict:
    # The source model name is withheld so annotators cannot favour a model they recognise.
    return {"id": response.pk, "html": markdown_render(response.text)}


def annotator_progress(*, annotator: AbstractUser, project: Project) -> dict:
    """Off the hot path (page load, project list): the annotator's own count and the project's."""
    done = Assignment.objects.filter(
        annotator=annotator, project=project, state=Assignment.State.SUBMITTED
    ).count()
    tasks = project.tasks.filter(is_gold=False).aggregate(
        total=Count("id"), complete=Count("id", filter=Q(status=ComparisonTask.Status.COMPLETE))
    )
    return {"done": done, "tasks_total": tasks["total"], "tasks_complete": tasks["complete"]}


def projects_for_worker(*, user: AbstractUser) -> list[Project]:
    projects = Project.objects.filter(deleted_at__isnull=True).order_by("name")
    if not user.is_superuser:
        projects = projects.filter(memberships__user=user, memberships__role__in=WORK_ROLES)
    return list(projects)
