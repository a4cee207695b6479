"""Read APIs over a project's prompts, responses, tasks, judgments and demonstrations."""
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.response import Response as HttpResponse

from labeling.apis.base import ProjectScopedMixin
from labeling.selectors.projects import OVERSIGHT_ROLES, WORK_ROLES
from labeling.apis.serializers import (
    DemonstrationInputSerializer, DemonstrationSerializer, JudgmentSerializer, PromptSerializer, ResponseSerializer,
    TaskSerializer,
)
from labeling.selectors import projects as selectors
from labeling.services.demonstrations import demonstration_create


class PromptListApi(ProjectScopedMixin, generics.ListAPIView):
    serializer_class = PromptSerializer

    def get_queryset(self):
        return selectors.prompt_list(project=self.project)


class ResponseListApi(ProjectScopedMixin, generics.ListAPIView):
    serializer_class = ResponseSerializer
    read_roles = OVERSIGHT_ROLES  # sources and model versions

    def get_queryset(self):
        return selectors.response_list(project=self.project)


class TaskListApi(ProjectScopedMixin, generics.ListAPIView):
    serializer_class = TaskSerializer
    read_roles = OVERSIGHT_ROLES  # is_gold

    def get_queryset(self):
        return selectors.task_list(project=self.project)


class JudgmentListApi(ProjectScopedMixin, generics.ListAPIView):
    serializer_class = JudgmentSerializer

    def get_queryset(self):
        return selectors.judgment_list(project=self.project, user=self.request.user, role=self.role)


class DemonstrationListApi(ProjectScopedMixin, generics.ListAPIView):
    serializer_class = DemonstrationSerializer
    write_roles = WORK_ROLES

    def get_queryset(self):
        return selectors.demonstration_list(project=self.project, user=self.request.user, role=self.role)

    @extend_schema(request=DemonstrationInputSerializer, responses={201: DemonstrationSerializer})
    def post(self, request, slug):
        serializer = DemonstrationInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        demonstration = demonstration_create(
            project=self.project, prompt_id=data["prompt"], author=request.user, text=data["text"],
            idempotency_key=data.get("idempotency_key"),
        )
        return HttpResponse(DemonstrationSerializer(demonstration).data, status=status.HTTP_201_CREATED)
