"""REST API for a project's machine annotators (project admins only): add, list, change, remove, run.
The work is in training.services.machine_annotators."""
from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response as HttpResponse
from rest_framework.views import APIView

from labeling.apis.base import ADMIN_ROLES, ProjectScopedMixin
from training.models import MachineAnnotator
from training.selectors.machine_annotators import machine_annotator_get, machine_annotator_list
from training.services.machine_annotators import (
    machine_annotator_create, machine_annotator_delete, machine_annotator_run, machine_annotator_update,
    machine_source,
)


class MachineAnnotatorOutputSerializer(serializers.ModelSerializer):
    source = serializers.SerializerMethodField(help_text='Its judgments\' source: "machine:<name>".')

    class Meta:
        model = MachineAnnotator
        fields = ["id", "name", "source", "version", "judge_prompt", "takes_overlap_seats", "enabled", "last_error",
                  "created_at"]

    def get_source(self, machine: MachineAnnotator) -> str:
        return machine_source(machine=machine)


class MachineAnnotatorInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=64, help_text="Lower-case letters, digits, '.', '_' or '-'.")
    version = serializers.IntegerField(help_text="A registered endpoint version the project may use, or a ready "
                                                 "reward version of the project's own (it ranks by reward).")
    judge_prompt = serializers.CharField(required=False, max_length=20000, trim_whitespace=False, help_text=(
        "The judge template with {prompt}, {response_a}, {response_b} and optionally {instructions}; "
        "default: the project mode's."))
    takes_overlap_seats = serializers.BooleanField(required=False, default=False)
    enabled = serializers.BooleanField(required=False, default=True)


class MachineAnnotatorUpdateSerializer(serializers.Serializer):
    version = serializers.IntegerField(required=False)
    judge_prompt = serializers.CharField(required=False, max_length=20000, trim_whitespace=False)
    takes_overlap_seats = serializers.BooleanField(required=False)
    enabled = serializers.BooleanField(required=False)


class _MachineAnnotatorApi(ProjectScopedMixin, APIView):
    read_roles = ADMIN_ROLES

    def machine(self, machine_id: int) -> MachineAnnotator:
        machine = machine_annotator_get(project=self.project, machine_id=machine_id)
        if machine is None:
            raise Http404
        return machine


class MachineAnnotatorListApi(_MachineAnnotatorApi):
    @extend_schema(responses=MachineAnnotatorOutputSerializer(many=True))
    def get(self, request, slug):
        return HttpResponse(MachineAnnotatorOutputSerializer(machine_annotator_list(project=self.project), many=True).data)

    @extend_schema(request=MachineAnnotatorInputSerializer, responses={201: MachineAnnotatorOutputSerializer})
    def post(self, request, slug):
        data = MachineAnnotatorInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        machine = machine_annotator_create(project=self.project, version_id=fields.pop("version"), by=request.user, **fields)
        return HttpResponse(MachineAnnotatorOutputSerializer(machine).data, status=status.HTTP_201_CREATED)


class MachineAnnotatorDetailApi(_MachineAnnotatorApi):
    @extend_schema(responses=MachineAnnotatorOutputSerializer)
    def get(self, request, slug, machine_id):
        return HttpResponse(MachineAnnotatorOutputSerializer(self.machine(machine_id)).data)

    @extend_schema(request=MachineAnnotatorUpdateSerializer, responses=MachineAnnotatorOutputSerializer)
    def patch(self, request, slug, machine_id):
        machine = self.machine(machine_id)
        data = MachineAnnotatorUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        if "version" in changes:
            changes["version_id"] = changes.pop("version")
        return HttpResponse(MachineAnnotatorOutputSerializer(machine_annotator_update(machine=machine, **changes)).data)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request, slug, machine_id):
        machine_annotator_delete(machine=self.machine(machine_id))
        return HttpResponse(status=status.HTTP_204_NO_CONTENT)


class MachineAnnotatorRunApi(_MachineAnnotatorApi):
    """Queue the machine's work: it judges tasks in batches until none is left, it is disabled, or its
    endpoint fails (then last_error says why)."""

    @extend_schema(request=None, responses={202: inline_serializer("MachineAnnotatorRun", fields={
        "queued": serializers.BooleanField()})})
    def post(self, request, slug, machine_id):
        machine_annotator_run(machine=self.machine(machine_id))
        return HttpResponse({"queued": True}, status=status.HTTP_202_ACCEPTED)
