"""The Content-Security-Policy header: on every page, strict enough to forbid inline script."""
import pytest

REQUIRED = [
    "default-src 'self'", "script-src 'self'", "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'",
    "form-action 'self'", "img-src 'self' data:", "style-src 'self'",
]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/login/", "/api/docs/", "/admin/login/", "/api/schema/", "/no-such-page/"])
def test_every_response_carries_the_policy(client, path):
    policy = client.get(path)["Content-Security-Policy"]
    directives = [d.strip() for d in policy.split(";")]
    for directive in REQUIRED:
        assert directive in directives, (directive, policy)
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


@pytest.mark.django_db
def test_api_docs_page_has_no_inline_script_or_style(client):
    html = client.get("/api/docs/").content.decode()
    assert "<script>" not in html and "<style" not in html
    init = client.get("/api/docs/?script=")
    assert init["Content-Type"] == "application/javascript" and b"SwaggerUIBundle" in init.content
