"""Response headers Django's SecurityMiddleware does not set: the Content-Security-Policy.

The policy lives in settings.CONTENT_SECURITY_POLICY; a view that needs another policy sets the
header itself and this middleware leaves it alone.
"""
from __future__ import annotations

from typing import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

CSP_HEADER = "Content-Security-Policy"


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
