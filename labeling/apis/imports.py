from django.conf import settings
from django.http import Http404
from django.urls import reverse
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response as HttpResponse
from rest_framework.views import APIView

from labeling.apis.base import ADMIN_ROLES, DeclaredSizeMixin, ProjectScopedMixin
from labeling.apis.serializers import ImportBatchSerializer, ImportInputSerializer, ImportResultSerializer
from labeling.models import ImportJob
from labeling.selectors.import_jobs import import_job_get
from labeling.services.import_jobs import (
    import_in_background, import_issues_list, import_job_create, import_result_body,
)
from labeling.services.imports import FORMATS, PREFERENCES, DataImportError, project_data_import


@extend_schema_field({"type": "string", "default": "auto", "description": f"One of: {', '.join(FORMATS)}."})
class ImportFormatField(serializers.ChoiceField):
    """The choices go in the description: drf-spectacular names enums by field name, and an enum here
    would collide with the exports' `format` enum (a schema warning, which CI fails on)."""


class ImportQuerySerializer(serializers.Serializer):
    skip_invalid = serializers.BooleanField(
        default=False, help_text="Import the valid records and return the others in `rejects` (default: all or nothing).")
    dry_run = serializers.BooleanField(
        default=False, help_text="Parse, check and count as an import would, return the first rows, write nothing (200).")


class ImportUploadSerializer(ImportInputSerializer, ImportQuerySerializer):
    format = ImportFormatField(choices=FORMATS, default="auto")
    preferences = serializers.ChoiceField(
        choices=PREFERENCES, default=PREFERENCES[0],
        help_text="What preference records (pairs, ranked judgments) become: `judgments` keeps them as judgments from "
                  "their source (training data; each fills its task's seat, so nothing is left to label), `open` makes "
                  "each an open task for annotators with the recorded ranking kept as its hidden reference.")
    count_for_retrain = serializers.BooleanField(
        default=False, help_text="Imported judgments count toward the project's `retrain_min_judgments`, so they can "
                                 "start a scheduled training round (default: only new human judgments do).")


class ImportRejectSerializer(serializers.Serializer):
    line = serializers.IntegerField()
    field = serializers.CharField()
    message = serializers.CharField()
    raw = serializers.CharField(help_text="The record as read (first 2,000 characters).")


class ImportPreviewSerializer(serializers.Serializer):
    line = serializers.IntegerField()
    kind = serializers.CharField()
    id = serializers.CharField()
    prompt = serializers.CharField()
    responses = serializers.ListField(child=serializers.DictField())
    ranking = serializers.JSONField(allow_null=True)
    demonstration = serializers.CharField()
    source = serializers.CharField()


class ImportOutcomeSerializer(ImportResultSerializer):
    skipped_invalid = serializers.IntegerField()
    open_tasks = serializers.IntegerField(help_text="Tasks this import leaves open for annotators.")
    references = serializers.IntegerField(help_text="Of those, tasks holding an imported ranking as hidden reference.")
    project_open_tasks = serializers.IntegerField(help_text="The project's open tasks (gold apart) after the import.")
    preferences = serializers.CharField()
    counts_for_retrain = serializers.BooleanField()
    dry_run = serializers.BooleanField()
    rejects = ImportRejectSerializer(many=True)
    preview = ImportPreviewSerializer(many=True, help_text="The first records as parsed (texts clipped).")


class ImportJobOutputSerializer(serializers.ModelSerializer):
    """A background import: poll `url` until `status` is succeeded (`result` holds what the import
    answers) or failed (`errors` by line, nothing written)."""

    url = serializers.SerializerMethodField()
    # Not an enum: drf-spectacular would name it after the field and collide with the other `status` enums.
    status = serializers.CharField(read_only=True, help_text="queued, running, succeeded or failed.")

    class Meta:
        model = ImportJob
        fields = ["id", "filename", "size", "options", "status", "progress", "rows_done", "result", "errors", "error",
                  "created_at", "started_at", "finished_at", "url"]

    def get_url(self, job) -> str:
        return reverse("api-import-job", kwargs={"slug": job.project.slug, "job_id": job.pk})


class ImportListCreateApi(DeclaredSizeMixin, ProjectScopedMixin, generics.ListAPIView):
    """List past imports, or upload a file: JSONL/JSON/CSV (optionally gzipped), Parquet, or a zip of a
    dataset folder (project admins)."""

    serializer_class = ImportBatchSerializer
    read_roles = ADMIN_ROLES
    parser_classes = [MultiPartParser]

    def upload_limit(self) -> int:
        return settings.PAIRWISE_MAX_IMPORT_BYTES

    def get_queryset(self):
        return self.project.imports.order_by("-id")

    @extend_schema(request={"multipart/form-data": ImportUploadSerializer}, parameters=[ImportQuerySerializer],
                   responses={201: ImportOutcomeSerializer, 200: ImportOutcomeSerializer, 202: ImportJobOutputSerializer})
    def post(self, request, slug):
        try:
            query = ImportQuerySerializer(data=request.query_params)  # ?skip_invalid=true&dry_run=true, or form fields
            query.is_valid(raise_exception=True)
            serializer = ImportUploadSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            upload, options = serializer.validated_data["file"], serializer.validated_data
            dry_run = options["dry_run"] or query.validated_data["dry_run"]
            if not dry_run and import_in_background(size=upload.size):  # too large for a request: the worker imports it
                job = import_job_create(
                    project=self.project, upload=upload, filename=upload.name, size=upload.size, user=request.user,
                    source=options["source"], fmt=options["format"],
                    skip_invalid=options["skip_invalid"] or query.validated_data["skip_invalid"],
                    preferences=options["preferences"], count_for_retrain=options["count_for_retrain"],
                )
                return HttpResponse(ImportJobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)
            result = project_data_import(
                project=self.project, stream=upload, filename=upload.name, user=request.user,
                source=options["source"], fmt=options["format"],
                skip_invalid=options["skip_invalid"] or query.validated_data["skip_invalid"],
                dry_run=dry_run,
                preferences=options["preferences"], count_for_retrain=options["count_for_retrain"],
            )
        except DataImportError as exc:
            errors = import_issues_list(exc.issues)
            whole_file = [i.message for i in exc.issues if i.line == 0]  # wrong type, size, encoding
            return HttpResponse(
                {"file": whole_file or ["import failed, nothing was written"], "errors": errors},
                status=status.HTTP_400_BAD_REQUEST,
            )
        body = ImportOutcomeSerializer(import_result_body(result)).data
        return HttpResponse(body, status=status.HTTP_200_OK if result.dry_run else status.HTTP_201_CREATED)


class ImportJobDetailApi(ProjectScopedMixin, APIView):
    """A background import's state (project admins; another project's job is a 404)."""

    read_roles = ADMIN_ROLES

    @extend_schema(responses=ImportJobOutputSerializer)
    def get(self, request, slug, job_id):
        job = import_job_get(project=self.project, job_id=job_id)
        if job is None:
            raise Http404("No such import job.")
        return HttpResponse(ImportJobOutputSerializer(job).data)
