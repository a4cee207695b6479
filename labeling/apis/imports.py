from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response as HttpResponse

from labeling.apis.base import ADMIN_ROLES, ProjectScopedMixin
from labeling.apis.serializers import ImportBatchSerializer, ImportInputSerializer, ImportResultSerializer
from labeling.services.imports import FORMATS, DataImportError, import_request_check, project_data_import


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
    dry_run = serializers.BooleanField()
    rejects = ImportRejectSerializer(many=True)
    preview = ImportPreviewSerializer(many=True, help_text="The first records as parsed (texts clipped).")


class ImportListCreateApi(ProjectScopedMixin, generics.ListAPIView):
    """List past imports, or upload a file: JSONL/JSON/CSV (optionally gzipped), Parquet, or a zip of a
    dataset folder (project admins)."""

    serializer_class = ImportBatchSerializer
    read_roles = ADMIN_ROLES
    parser_classes = [MultiPartParser]

    def get_queryset(self):
        return self.project.imports.order_by("-id")

    @extend_schema(request={"multipart/form-data": ImportUploadSerializer}, parameters=[ImportQuerySerializer],
                   responses={201: ImportOutcomeSerializer, 200: ImportOutcomeSerializer})
    def post(self, request, slug):
        try:
            import_request_check(content_length=request.META.get("CONTENT_LENGTH"))  # before request.data is read
            query = ImportQuerySerializer(data=request.query_params)  # ?skip_invalid=true&dry_run=true, or form fields
            query.is_valid(raise_exception=True)
            serializer = ImportUploadSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            upload, options = serializer.validated_data["file"], serializer.validated_data
            result = project_data_import(
                project=self.project, stream=upload, filename=upload.name, user=request.user,
                source=options["source"], fmt=options["format"],
                skip_invalid=options["skip_invalid"] or query.validated_data["skip_invalid"],
                dry_run=options["dry_run"] or query.validated_data["dry_run"],
            )
        except DataImportError as exc:
            errors = [{"line": i.line, "field": i.field, "message": i.message} for i in exc.issues]
            whole_file = [i.message for i in exc.issues if i.line == 0]  # wrong type, size, encoding
            return HttpResponse(
                {"file": whole_file or ["import failed, nothing was written"], "errors": errors},
                status=status.HTTP_400_BAD_REQUEST,
            )
        rejects = [{"line": i.line, "field": i.field, "message": i.message, "raw": i.raw} for i in result.rejects]
        body = ImportOutcomeSerializer({**result.as_dict(), "rejects": rejects, "preview": result.preview}).data
        return HttpResponse(body, status=status.HTTP_200_OK if result.dry_run else status.HTTP_201_CREATED)
