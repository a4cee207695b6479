"""OpenAPI generation: every operation documents the errors the shared plumbing can answer with.

The views only declare their own outcomes (201, 202, 409, ...). What every view can answer the same
way is added here, so the schema stays honest without repeating it on each view:
400 when the operation writes (a service refused it with a ValidationError, or the body is invalid) or
takes query parameters,
401 and 403 when it needs a login (no credentials; a role or CSRF check refused),
404 when the path names something (a project you are not a member of is reported as missing too)
or the list is paginated (a page past the end).
"""
from __future__ import annotations

from drf_spectacular import openapi
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField(required=False, help_text="Machine-readable reason, where there is one.")


VALIDATION_ERROR = OpenApiResponse(
    OpenApiTypes.OBJECT, description="Invalid input: field name -> list of messages (non_field_errors for the rest)."
)
ERRORS = {
    "400": VALIDATION_ERROR,
    "401": OpenApiResponse(ErrorSerializer, description="Not authenticated."),
    "403": OpenApiResponse(ErrorSerializer, description="Authenticated, but the role or the CSRF check refuses it."),
    "404": OpenApiResponse(ErrorSerializer, description="No such object, or not in a project of yours."),
}


class AutoSchema(openapi.AutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        responses = operation["responses"]
        for code in self._error_codes(operation):
            if code not in responses:
                responses[code] = self._get_response_for_code(ERRORS[code], code)
        return operation

    def _error_codes(self, operation: dict) -> list[str]:
        parameters = operation.get("parameters", [])
        codes = []
        if self.method not in ("GET", "HEAD") or any(p["in"] == "query" for p in parameters):
            codes.append("400")
        if operation.get("security") and {} not in operation["security"]:
            codes += ["401", "403"]
        if any(p["in"] == "path" for p in parameters) or (self._is_list_view() and self._get_paginator()):
            codes.append("404")
        return codes
