from django.contrib.auth import get_user_model
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, permissions, status
from rest_framework.response import Response as HttpResponse
from rest_framework.views import APIView

from labeling.apis.base import ADMIN_ROLES, ProjectScopedMixin
from labeling.apis.serializers import MembershipSerializer, ProjectInputSerializer, ProjectOutputSerializer
from labeling.selectors.projects import project_list_for_user
from labeling.services.projects import membership_set, project_create, project_soft_delete, project_update


class IsStaff(permissions.BasePermission):
    message = "Only staff users can create projects."

    def has_permission(self, request, view):
        return request.method in permissions.SAFE_METHODS or bool(request.user and request.user.is_staff)


class ProjectListApi(generics.ListAPIView):
    serializer_class = ProjectOutputSerializer
    permission_classes = [permissions.IsAuthenticated, IsStaff]

    def get_queryset(self):
        return project_list_for_user(user=self.request.user).order_by("id")

    @extend_schema(request=ProjectInputSerializer, responses={201: ProjectOutputSerializer})
    def post(self, request):
        serializer = ProjectInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        project = project_create(created_by=request.user, **serializer.validated_data)
        return HttpResponse(ProjectOutputSerializer(project).data, status=status.HTTP_201_CREATED)


class ProjectDetailApi(ProjectScopedMixin, APIView):
    @extend_schema(responses=ProjectOutputSerializer)
    def get(self, request, slug):
        return HttpResponse(ProjectOutputSerializer(self.project).data)

    @extend_schema(request=ProjectInputSerializer, responses=ProjectOutputSerializer)
    def patch(self, request, slug):
        serializer = ProjectInputSerializer(self.project, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        fields = {k: v for k, v in serializer.validated_data.items() if k != "slug"}
        return HttpResponse(ProjectOutputSerializer(project_update(project=self.project, **fields)).data)

    @extend_schema(responses={204: None})
    def delete(self, request, slug):
        project_soft_delete(project=self.project)
        return HttpResponse(status=status.HTTP_204_NO_CONTENT)


class MembershipListApi(ProjectScopedMixin, generics.ListAPIView):
    serializer_class = MembershipSerializer
    read_roles = ADMIN_ROLES

    def get_queryset(self):
        return self.project.memberships.select_related("user").order_by("id")

    @extend_schema(request=MembershipSerializer, responses={201: MembershipSerializer})
    def post(self, request, slug):
        serializer = MembershipSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = get_object_or_404(get_user_model(), username=serializer.validated_data["user"]["username"])
        membership = membership_set(project=self.project, user=user, role=serializer.validated_data["role"])
        return HttpResponse(MembershipSerializer(membership).data, status=status.HTTP_201_CREATED)
