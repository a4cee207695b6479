"""Shared API plumbing: project lookup by slug with role checks, and service errors as HTTP 400."""
from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, parsers, views
from rest_framework.request import Request

from labeling.models import Membership
from labeling.selectors.projects import project_access_get
from labeling.upload_limits import UploadRefused, request_size_check

READ_ROLES = frozenset(Membership.Role.values)
ADMIN_ROLES = frozenset({Membership.Role.ADMIN})


def exception_handler(exc, context):
    """Services raise Django's ValidationError; the API answers it as a DRF 400 with field errors."""
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(detail)
    if isinstance(exc, UploadRefused):
        exc = exceptions.ValidationError({"file": [str(exc)]})
    return views.exception_handler(exc, context)


class BoundedJSONParser(parsers.JSONParser):
    """DRF's JSON parser (the default of every API, config.settings), with JSON nested too deep for
    the parser's stack a 400 rather than a RecursionError (a 500)."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply") from None


class DeclaredSizeMixin:
    """Refuses a POST whose declared size (Content-Length) cannot hold an upload within
    upload_limit(), before anything reads the body: this runs before authentication, whose session
    CSRF check would parse (and store) the whole form."""

    def upload_limit(self) -> int:
        raise NotImplementedError

    def initial(self, request: Request, *args, **kwargs):
        if request.method == "POST":
            request_size_check(content_length=request.META.get("CONTENT_LENGTH"), limit=self.upload_limit())
        super().initial(request, *args, **kwargs)


class ProjectScopedMixin:
    """Resolves `slug` to a live project and checks the caller's role for the HTTP method.

    Non-members get 404 rather than 403, so project names do not leak between tenants.
    """

    read_roles: frozenset[str] = READ_ROLES
    write_roles: frozenset[str] = ADMIN_ROLES

    def initial(self, request: Request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        allowed = self.read_roles if request.method in ("GET", "HEAD", "OPTIONS") else self.write_roles
        try:
            self.project, self.role = project_access_get(slug=kwargs.get("slug"), user=request.user, roles=allowed)
        except DjangoPermissionDenied as exc:
            raise exceptions.PermissionDenied(str(exc)) from None  # DRF's own would drop the reason
