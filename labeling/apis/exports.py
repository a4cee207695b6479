"""Export endpoints, project admins only: a streamed export, background jobs with a download link,
and frozen snapshots. The work is in labeling.services.exports, the reads in labeling.selectors.exports."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.http import FileResponse, Http404, StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response as HttpResponse
from rest_framework.views import APIView

from labeling.apis.base import ADMIN_ROLES, ProjectScopedMixin
from labeling.apis.schema import ErrorSerializer
from labeling.label_models import LABEL_MODEL_CHOICES
from labeling.models import DatasetSnapshot, ExportJob
from labeling import export_records, splits
from labeling.selectors import exports as export_selectors
from labeling.services import exports

DEFAULT_STREAM_MAX_ROWS = 200_000
# One media type per export format (labeling.export_records.content_type), parameters left out.
FILE_RESPONSES = {
    (200, media_type): OpenApiResponse(OpenApiTypes.BINARY, description="The export file.")
    for media_type in sorted({export_records.content_type(fmt).split(";")[0] for fmt in export_records.FORMATS})
}


class _FormatIsOurs(DefaultContentNegotiation):
    """`?format=` names the export format here, not a DRF renderer, and errors are always JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class TooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"


class ExportInputSerializer(serializers.Serializer):
    format = serializers.ChoiceField(choices=export_records.FORMATS, default="trl")
    date_from = serializers.DateField(required=False)
    date_to = serializers.DateField(required=False)
    annotator = serializers.CharField(required=False)
    sources = serializers.ListField(child=serializers.CharField(), required=False)
    model_versions = serializers.ListField(child=serializers.IntegerField(), required=False)
    judgment_source = serializers.CharField(required=False)
    min_agreement = serializers.FloatField(required=False, min_value=0, max_value=1)
    consensus = serializers.ChoiceField(choices=export_selectors.CONSENSUS, required=False)
    exclude_gold = serializers.BooleanField(required=False)
    split = serializers.ChoiceField(choices=[splits.TRAIN, splits.TEST], required=False)
    test_fraction = serializers.FloatField(required=False)
    split_seed = serializers.CharField(required=False)
    pseudonymous = serializers.BooleanField(required=False, help_text="False: usernames instead of pseudonyms.")
    label_model = serializers.ChoiceField(choices=LABEL_MODEL_CHOICES, required=False, help_text=(
        "Pair formats: add label_posterior, this label model's P(chosen beats rejected) from the project's latest fit."))


class ExportJobInputSerializer(ExportInputSerializer):
    snapshot = serializers.BooleanField(default=False, help_text="Freeze the result as a DatasetSnapshot.")


class ExportJobOutputSerializer(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = ExportJob
        fields = ["id", "format", "filters", "status", "progress", "rows", "error", "snapshot", "created_at",
                  "finished_at", "download_url"]

    def get_download_url(self, job) -> str | None:
        if job.status != ExportJob.Status.SUCCEEDED:
            return None
        return reverse("api-export-job-download", kwargs={"slug": job.project.slug, "job_id": job.pk})


class SnapshotOutputSerializer(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = DatasetSnapshot
        fields = ["id", "format", "filters", "rows", "sha256", "created_by", "created_at", "download_url"]

    def get_download_url(self, snapshot) -> str:
        return reverse("api-snapshot-download", kwargs={"slug": snapshot.project.slug, "snapshot_id": snapshot.pk})


def _input(serializer_class, data) -> tuple[str, export_selectors.ExportFilters, dict[str, Any]]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    values = dict(serializer.validated_data)
    fmt = values.pop("format")
    extra = {key: values.pop(key) for key in ("snapshot",) if key in values}
    filters = export_selectors.ExportFilters.from_dict(values)
    export_selectors.format_validate(fmt=fmt, filters=filters)
    return fmt, filters, extra


def _query_data(request) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key in request.query_params:
        values = request.query_params.getlist(key)
        if key in ("sources", "model_versions"):
            data[key] = [v.strip() for value in values for v in value.split(",") if v.strip()]
        else:
            data[key] = values[-1]
    return data


def _refuse_if_large(project, fmt, filters) -> None:
    limit = getattr(settings, "PAIRWISE_EXPORT_STREAM_MAX_ROWS", DEFAULT_STREAM_MAX_ROWS)
    if export_selectors.export_count(project=project, fmt=fmt, filters=filters) > limit:
        raise TooLarge(f"More than {limit} rows: POST the same parameters to exports/jobs/ to run it in the background.")


def _filename(project, fmt: str, stem: str = "export") -> str:
    return f"{project.slug}-{stem}-{fmt}.{export_records.extension(fmt)}"


class ExportStreamApi(ProjectScopedMixin, APIView):
    """Stream an export; the first bytes leave before the last row is read."""

    read_roles = ADMIN_ROLES
    content_negotiation_class = _FormatIsOurs
    renderer_classes = [JSONRenderer]

    @extend_schema(parameters=[ExportInputSerializer], responses={
        **FILE_RESPONSES, 413: OpenApiResponse(ErrorSerializer, description="Too many rows to stream: use a job.")})
    def get(self, request, slug):
        fmt, filters, _ = _input(ExportInputSerializer, _query_data(request))
        _refuse_if_large(self.project, fmt, filters)
        if fmt in export_records.FILE_FORMATS:
            body = exports.export_stream_file(project=self.project, fmt=fmt, filters=filters)
            response = StreamingHttpResponse(iter(lambda: body.read(1 << 16), b""),
                                             content_type=export_records.content_type(fmt))
        else:
            chunks = exports.export_chunks(project=self.project, fmt=fmt, filters=filters)
            response = StreamingHttpResponse((data for data, _ in chunks), content_type=export_records.content_type(fmt))
        response["Content-Disposition"] = f'attachment; filename="{_filename(self.project, fmt)}"'
        return response


class ExportJobListCreateApi(ProjectScopedMixin, APIView):
    """List export jobs, or queue one (large exports); poll it, then follow download_url."""

    read_roles = ADMIN_ROLES

    @extend_schema(responses=ExportJobOutputSerializer(many=True))
    def get(self, request, slug):
        jobs = self.project.export_jobs.select_related("project").order_by("-id")[:100]
        return HttpResponse(ExportJobOutputSerializer(jobs, many=True).data)

    @extend_schema(request=ExportJobInputSerializer, responses={202: ExportJobOutputSerializer})
    def post(self, request, slug):
        fmt, filters, extra = _input(ExportJobInputSerializer, request.data)
        job = exports.export_job_create(project=self.project, fmt=fmt, filters=filters, user=request.user,
                                        snapshot=extra.get("snapshot", False))
        return HttpResponse(ExportJobOutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class ExportJobDetailApi(ProjectScopedMixin, APIView):
    read_roles = ADMIN_ROLES

    @extend_schema(responses=ExportJobOutputSerializer)
    def get(self, request, slug, job_id):
        job = self.project.export_jobs.select_related("project").filter(pk=job_id).first()
        if job is None:
            raise Http404("No such export job.")
        return HttpResponse(ExportJobOutputSerializer(job).data)


def _file_response(path: str, filename: str, fmt: str) -> FileResponse:
    if not path or not Path(path).is_file():
        raise Http404("The export file is gone.")
    return FileResponse(open(path, "rb"), as_attachment=True, filename=filename,
                        content_type=export_records.content_type(fmt))


class ExportJobDownloadApi(ProjectScopedMixin, APIView):
    read_roles = ADMIN_ROLES

    @extend_schema(responses=FILE_RESPONSES)
    def get(self, request, slug, job_id):
        job = self.project.export_jobs.filter(pk=job_id, status=ExportJob.Status.SUCCEEDED).first()
        if job is None:
            raise Http404("No finished export job with this id.")
        return _file_response(job.path, _filename(self.project, job.format, f"job{job.pk}"), job.format)


class SnapshotListCreateApi(ProjectScopedMixin, APIView):
    """Frozen exports. POST freezes a small export now; large ones: POST exports/jobs/ with snapshot=true."""

    read_roles = ADMIN_ROLES

    @extend_schema(responses=SnapshotOutputSerializer(many=True))
    def get(self, request, slug):
        snapshots = self.project.snapshots.select_related("project").order_by("-id")
        return HttpResponse(SnapshotOutputSerializer(snapshots, many=True).data)

    @extend_schema(request=ExportInputSerializer, responses={
        201: SnapshotOutputSerializer, 413: OpenApiResponse(ErrorSerializer, description="Too many rows: use a job.")})
    def post(self, request, slug):
        fmt, filters, _ = _input(ExportInputSerializer, request.data)
        _refuse_if_large(self.project, fmt, filters)
        snapshot = exports.dataset_snapshot_create(project=self.project, fmt=fmt, filters=filters, user=request.user)
        return HttpResponse(SnapshotOutputSerializer(snapshot).data, status=status.HTTP_201_CREATED)


class SnapshotDownloadApi(ProjectScopedMixin, APIView):
    read_roles = ADMIN_ROLES

    @extend_schema(responses=FILE_RESPONSES)
    def get(self, request, slug, snapshot_id):
        snapshot = self.project.snapshots.filter(pk=snapshot_id).first()
        if snapshot is None:
            raise Http404("No such snapshot.")
        return _file_response(snapshot.path, _filename(self.project, snapshot.format, f"snapshot{snapshot.pk}"),
                              snapshot.format)
