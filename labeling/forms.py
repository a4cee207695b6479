"""Login forms of the site and of the admin, both throttled by labeling.services.auth."""
from __future__ import annotations

from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from labeling.services.auth import login_attempt_check, login_attempt_record, login_refusal_message

THROTTLED = "throttled"


def client_address(request: HttpRequest | None) -> str:
    # REMOTE_ADDR only: X-Forwarded-For is whatever the client writes unless a proxy we trust sets it.
    return (request.META.get("REMOTE_ADDR") or "") if request is not None else ""


class ThrottledLoginMixin:
    """Refuses before authenticating while the username or the address is throttled (so a correct
    password does not help), and counts every outcome."""

    def clean(self):
        username, ip = self.cleaned_data.get("username") or "", client_address(self.request)
        wait = login_attempt_check(username=username, ip=ip)
        if wait:
            raise ValidationError(login_refusal_message(wait_s=wait), code=THROTTLED)
        try:
            cleaned = super().clean()
        except ValidationError:
            login_attempt_record(username=username, ip=ip, success=False)
            raise
        if self.get_user() is not None:
            login_attempt_record(username=username, ip=ip, success=True)
        return cleaned


class ThrottledAuthenticationForm(ThrottledLoginMixin, AuthenticationForm):
    pass


class ThrottledAdminAuthenticationForm(ThrottledLoginMixin, AdminAuthenticationForm):
    pass
