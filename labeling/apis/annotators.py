"""An admin's actions on one annotator of a project: exclude, re-include, re-queue their tasks
(labeling.services.annotators). Project admins only; an admin of another project gets 404."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response as HttpResponse
from rest_framework.views import APIView

from labeling.apis.base import ProjectScopedMixin
from labeling.apis.serializers import (
    AnnotatorExcludeInputSerializer, AnnotatorExclusionSerializer, AnnotatorTasksRequeueOutputSerializer,
)
from labeling.services.annotators import annotator_exclude, annotator_include, annotator_tasks_requeue


def _user(user_id: int) -> AbstractUser:
    # The services look the member up by id, so an unknown id and a non-member answer the same 400 on `user`.
    return get_user_model()(pk=user_id)


class AnnotatorExcludeApi(ProjectScopedMixin, APIView):
    @extend_schema(request=AnnotatorExcludeInputSerializer, responses=AnnotatorExclusionSerializer)
    def post(self, request: Request, slug: str, user_id: int):
        body = AnnotatorExcludeInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        membership = annotator_exclude(project=self.project, user=_user(user_id), by=request.user,
                                       reason=body.validated_data["reason"])
        return HttpResponse(AnnotatorExclusionSerializer(membership).data)


class AnnotatorIncludeApi(ProjectScopedMixin, APIView):
    @extend_schema(request=None, responses=AnnotatorExclusionSerializer)
    def post(self, request: Request, slug: str, user_id: int):
        membership = annotator_include(project=self.project, user=_user(user_id), by=request.user)
        return HttpResponse(AnnotatorExclusionSerializer(membership).data)


class AnnotatorTasksRequeueApi(ProjectScopedMixin, APIView):
    @extend_schema(request=None, responses=AnnotatorTasksRequeueOutputSerializer)
    def post(self, request: Request, slug: str, user_id: int):
        reopened = annotator_tasks_requeue(project=self.project, user=_user(user_id), by=request.user)
        return HttpResponse(AnnotatorTasksRequeueOutputSerializer({"reopened": reopened}).data)
