from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response as HttpResponse

from labeling.apis.base import ADMIN_ROLES, ProjectScopedMixin
from labeling.apis.serializers import ImportBatchSerializer, ImportInputSerializer, ImportResultSerializer
from labeling.services.imports import DataImportError, import_request_check, project_data_import


class ImportListCreateApi(ProjectScopedMixin, generics.ListAPIView):
    """List past imports, or upload a JSONL/JSONL.gz/CSV file (project admins)."""

    serializer_class = ImportBatchSerializer
    read_roles = ADMIN_ROLES
    parser_classes = [MultiPartParser]

    def get_queryset(self):
        return self.project.imports.order_by("-id")

    @extend_schema(request={"multipart/form-data": ImportInputSerializer}, responses={201: ImportResultSerializer})
    def post(self, request, slug):
        try:
            import_request_check(content_length=request.META.get("CONTENT_LENGTH"))  # before request.data is read
            serializer = ImportInputSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            upload = serializer.validated_data["file"]
            result = project_data_import(
                project=self.project, stream=upload, filename=upload.name, user=request.user,
                source=serializer.validated_data["source"],
            )
        except DataImportError as exc:
            errors = [{"line": i.line, "field": i.field, "message": i.message} for i in exc.issues]
            whole_file = [i.message for i in exc.issues if i.line == 0]  # wrong type, size, encoding
            return HttpResponse(
                {"file": whole_file or ["import failed, nothing was written"], "errors": errors},
                status=status.HTTP_400_BAD_REQUEST,
            )
        return HttpResponse(ImportResultSerializer(result.as_dict()).data, status=status.HTTP_201_CREATED)
