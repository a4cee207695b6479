"""The annotator's hot path: next task (with the one after it), submit, skip; and revising a judgment.

Kept thin on purpose: one query resolves the project and the caller's role, the services do the
rest, and the output is built from plain dicts instead of serializers.
"""
from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.fields import SkipField, empty
from rest_framework.request import Request
from rest_framework.response import Response as HttpResponse
from rest_framework.views import APIView

from labeling.models import Assignment
from labeling.selectors.projects import WORK_ROLES, judgment_get_for_worker, project_access_get
from labeling.selectors.queue import assignment_payloads
from labeling.services.assignment import (
    AssignmentConflict, Verdict, assignment_skip, demonstration_submit, judgment_correct, judgment_submit,
    task_assign_next,
)


def _conflict(exc: AssignmentConflict) -> HttpResponse:
    return HttpResponse({"detail": exc.message, "code": exc.code}, status=status.HTTP_409_CONFLICT)


class _AsSent(serializers.Field):
    """A body value passed on as sent, neither coerced nor refused: verdict_validate checks it (one
    place, one set of messages). A missing value is left out; each subclass's schema documents it."""

    def get_value(self, dictionary):
        return dictionary.get(self.field_name, empty)

    def validate_empty_values(self, data):
        if data is empty:
            raise SkipField()
        return False, data

    def to_internal_value(self, data):
        return data

    def to_representation(self, value):
        return value


def _as_sent(schema: dict) -> type[_AsSent]:
    return extend_schema_field(schema)(type("AsSent", (_AsSent,), {}))


_NonNegative = _as_sent({"type": "integer", "minimum": 0})
_Text = _as_sent({"type": "string"})
_Key = _as_sent({"type": "string", "minLength": 1, "maxLength": 128})
_Ranking = _as_sent({"type": "array", "items": {"type": "array", "items": {"type": "integer"}}})
_Likert = _as_sent({"type": "object", "additionalProperties": {"type": "integer"}})
_Flags = _as_sent({"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string", "minLength": 1}}})
_Bool = _as_sent({"type": "boolean", "default": False})

RANKING_HELP = ("Tie groups of response ids, best first. K-way: a response may not be ranked below one it "
                "was rated strictly higher than in `likert` (400 on `ranking`).")


class CorrectInputSerializer(serializers.Serializer):
    """A verdict on the task's responses; the service checks it against them (one place, one set of messages)."""
    idempotency_key = _Key()
    ranking = _Ranking(help_text=RANKING_HELP)
    both_bad = _Bool(required=False)
    likert = _Likert(required=False)
    flags = _Flags(required=False)
    rationale = _Text(required=False)
    time_spent_ms = _NonNegative(required=False)

    def verdict(self) -> Verdict:
        data = self.validated_data
        return Verdict(ranking=data.get("ranking"), likert=data.get("likert"), flags=data.get("flags"),
                       rationale=data.get("rationale") or "", time_spent_ms=data.get("time_spent_ms") or 0,
                       both_bad=bool(data.get("both_bad", False)))


class SubmitInputSerializer(CorrectInputSerializer):
    """A verdict, as for a correction; in demonstrate mode `text` instead of `ranking`."""
    ranking = _Ranking(required=False, help_text=RANKING_HELP)
    text = _as_sent({"type": "string", "minLength": 1})(required=False, help_text="Demonstrate mode: the ideal response.")


def _body(serializer_class, request: Request) -> CorrectInputSerializer:
    serializer = serializer_class(data=request.data if isinstance(request.data, dict) else {})
    serializer.is_valid(raise_exception=True)  # refuses nothing: a missing field is a field error of the service's
    return serializer


class ProjectNextApi(APIView):
    @extend_schema(request=None, responses={200: OpenApiResponse(description="current and next assignment")})
    def post(self, request: Request, slug: str):
        project, _ = project_access_get(slug=slug, user=request.user, roles=WORK_ROLES, hide=True)
        result = task_assign_next(annotator=request.user, project=project)
        held = [a for a in (result.assignment, result.prefetched) if a is not None]
        payloads = assignment_payloads(assignments=held)
        return HttpResponse({
            # Gold picks are reported as plain assignments: the page must not be able to tell (nor how a
            # task came by its place in the queue).
            "reason": {"gold": "assigned", "started": "assigned", "oldest": "assigned", "scored": "assigned"}.get(
                result.reason, result.reason),
            "mode": project.mode,
            "current": payloads[0] if payloads else None,
            "next": payloads[1] if len(payloads) > 1 else None,
        })


class AssignmentSubmitApi(APIView):
    @extend_schema(request=SubmitInputSerializer, responses={
        201: OpenApiResponse(description="stored (or the first result of a retry)"),
        409: OpenApiResponse(description="expired, skipped or foreign assignment"),
    })
    def post(self, request: Request, assignment_id: int):
        body = _body(SubmitInputSerializer, request)
        data, stub = body.validated_data, Assignment(pk=assignment_id)
        try:
            if "text" in data and "ranking" not in data:
                demonstration = demonstration_submit(
                    assignment=stub, annotator=request.user, text=data.get("text"),
                    idempotency_key=str(data.get("idempotency_key") or ""), time_spent_ms=data.get("time_spent_ms") or 0,
                )
                return HttpResponse({"demonstration": demonstration.pk}, status=status.HTTP_201_CREATED)
            judgment = judgment_submit(assignment=stub, annotator=request.user, verdict=body.verdict(),
                                       idempotency_key=data.get("idempotency_key"))
        except AssignmentConflict as exc:
            return _conflict(exc)
        return HttpResponse({"judgment": judgment.pk, "assignment": assignment_id}, status=status.HTTP_201_CREATED)


class AssignmentSkipApi(APIView):
    @extend_schema(request=None, responses={
        200: OpenApiResponse(description="skipped"),
        409: OpenApiResponse(description="already submitted, expired or foreign assignment"),
    })
    def post(self, request: Request, assignment_id: int):
        try:
            assignment = assignment_skip(assignment=Assignment(pk=assignment_id), annotator=request.user)
        except AssignmentConflict as exc:
            return _conflict(exc)
        return HttpResponse({"assignment": assignment.pk, "state": assignment.state})


class JudgmentCorrectApi(APIView):
    @extend_schema(request=CorrectInputSerializer, responses={
        201: OpenApiResponse(description="the new judgment, which supersedes this one (or the first result of a retry)"),
        404: OpenApiResponse(description="no such judgment in a project where you label"),
        409: OpenApiResponse(description="another annotator's judgment, or one already corrected (correct the newest)"),
    })
    def post(self, request: Request, judgment_id: int):
        """Revise your own judgment: a new judgment supersedes it and takes over its preference pairs."""
        body = _body(CorrectInputSerializer, request)
        judgment = judgment_get_for_worker(judgment_id=judgment_id, user=request.user)
        try:
            corrected = judgment_correct(judgment=judgment, annotator=request.user, verdict=body.verdict(),
                                         idempotency_key=body.validated_data.get("idempotency_key"))
        except AssignmentConflict as exc:
            return _conflict(exc)
        return HttpResponse({"judgment": corrected.pk, "supersedes": judgment.pk}, status=status.HTTP_201_CREATED)
