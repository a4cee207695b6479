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


class ImportUploadSerializer(ImportInputSerializer, ImportQuerySerializer):
    format = ImportFormatField(choices=FORMATS, default="auto")


class ImportRejectSerializer(serializers.Serializer):
    line = serializers.IntegerField()
    field = serializers.CharField()
    message = serializers.CharField()
    raw = serializers.CharField(help_text="The record as read (first 2,000 characters).")


class ImportOutcomeSerializer(ImportResultSerializer):
    skipped_invalid = serializers.IntegerField()
    rejects = ImportRejectSerializer(many=True)


class ImportListCreateApi(ProjectScopedMixin, generics.ListAPIView):
    """List past imports, or upload a file: JSONL/JSON/CSV (optionally gzipped), Parquet, or a zip of a
    dataset folder (project admins)."""

    serializer_class = ImportBatchSerializer
    read_roles = ADMIN_ROLES
    parser_classes = [MultiPartParser]

    def get_queryset(self):
        return self.project.imports.order_by("-id")

    @extend_schema(request={"multipart/form-data": ImportUploadSerializer}, parameters=[ImportQuerySerializer],
                   responses={201: ImportOutcomeSerializer})
    def post(self, request, slug):
        try:
            import_request_check(content_length=request.META.get("CONTENT_LENGTH"))  # before request.data is read
            query = ImportQuerySerializer(data=request.query_params)  # ?skip_invalid=true, or the form field
            query.is_valid(raise_exception=True)
            serializer = ImportUploadSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            upload, options = serializer.validated_data["file"], serializer.validated_data
            result = project_data_import(
                project=self.project, stream=upload, filename=upload.name, user=request.user,
                source=options["source"], fmt=options["format"],
                skip_invalid=options["skip_invalid"] or query.validated_data["skip_invalid"],
            )
        except DataImportError as exc:
            errors = [{"line": i.line, "field": i.field, "message": i.message} for i in exc.issues]
            whole_file = [i.message for i in exc.issues if i.line == 0]  # wrong type, size, encoding
            return HttpResponse(
                {"file": whole_file or ["import failed, nothing was written"], "errors": errors},
                status=status.HTTP_400_BAD_REQUEST,
            )
        rejects = [{"line": i.line, "field": i.field, "message": i.message, "raw": i.raw} for i in result.rejects]
        body = ImportOutcomeSerializer({**result.as_dict(), "rejects": rejects}).data
        return HttpResponse(body, status=status.HTTP_201_CREATED)
