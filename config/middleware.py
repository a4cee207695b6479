"""Project-wide middleware.

ContentSecurityPolicyMiddleware: the response header Django's SecurityMiddleware does not set.
The policy lives in settings.CONTENT_SECURITY_POLICY; a view that needs another policy sets the
header itself and this middleware leaves it alone.

DatabaseUnavailableMiddleware: a lost database answers 503 with Retry-After instead of a 500 page.
Postgres restarting, a failover or a killed backend surface as OperationalError/InterfaceError.
The transaction was rolled back and the write paths are idempotent (submits by key), so the
client may simply retry; the labeling page does. The broken connection is dropped at the end of
the request and the next request reconnects (conn_health_checks), with no server restart.

RequestSizeMiddleware: a request whose declared body cannot fit the largest upload budget is
refused with 413 before anything reads it (CsrfViewMiddleware would parse and store a form of any
size). The APIs then check their own, tighter budget (labeling.apis.base.DeclaredSizeMixin).
"""
from __future__ import annotations

import logging
from typing import Callable

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

from labeling.upload_limits import UploadRefused, request_size_check

CSP_HEADER = "Content-Security-Policy"
RETRY_AFTER_S = 2
logger = logging.getLogger("pairwise.db")


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response
        self.policy = "; ".join(f"{name} {' '.join(values)}" for name, values in settings.CONTENT_SECURITY_POLICY.items())

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        # Every response, not only text/html: an uploaded or exported file opened in a tab is
        # inert too, and JSON answers do not care.
        if CSP_HEADER not in response:
            response[CSP_HEADER] = self.policy
        return response


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        logger.warning("database unavailable: %s %s: %s", request.method, request.path, str(exception).strip())
        message = "The database is unavailable; retry in a few seconds."
        if request.path.startswith("/api/"):
            response = JsonResponse({"detail": message, "code": "db_unavailable"}, status=503)
        else:
            response = HttpResponse(message, status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(RETRY_AFTER_S)
        return response


class RequestSizeMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = max(settings.PAIRWISE_MAX_IMPORT_BYTES, settings.PAIRWISE_MAX_EVAL_UPLOAD_BYTES)
        try:
            request_size_check(content_length=request.META.get("CONTENT_LENGTH"), limit=limit)
        except UploadRefused as exc:
            if request.path.startswith("/api/"):
                return JsonResponse({"file": [str(exc)]}, status=413)
            return HttpResponse(f"Upload refused: {exc}.", status=413, content_type="text/plain; charset=utf-8")
        return self.get_response(request)
