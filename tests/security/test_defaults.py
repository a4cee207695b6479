"""Defaults that are safe: no public SECRET_KEY with DEBUG off, Django's four password validators,
a markdown preview with a size cap and a render cache bounded in bytes, and runs' params, logs,
errors and endpoint URLs kept from annotators (issue 24, point 6)."""
from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys
import tracemalloc

import pytest
from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from labeling.selectors.queue import markdown_render
from labeling.services.demo import demo_seed
from training.models import ModelVersion, TrainingRun

DEVELOPMENT_KEY = "django-insecure-pairwise-local-only"  # in the repository, so public
PRODUCTION = {"PAIRWISE_HTTPS": "1", "DEBUG": "0", "ALLOWED_HOSTS": "pairwise.example.com"}


# --- SECRET_KEY ----------------------------------------------------------------------------------

def manage(var_dir, *args: str, **env: str) -> subprocess.CompletedProcess:
    """manage.py in a bare environment (not the test run's, which carries a key): only what the case sets."""
    environ = {"PATH": os.environ.get("PATH", ""), "PAIRWISE_VAR_DIR": str(var_dir), **env}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=settings.BASE_DIR, env=environ,
                          capture_output=True, text=True, timeout=300)


def write_key(var_dir, **env: str) -> subprocess.CompletedProcess:
    environ = {"PATH": os.environ.get("PATH", ""), "PAIRWISE_VAR_DIR": str(var_dir), **env}
    return subprocess.run([sys.executable, "-m", "config.secret_key"], cwd=settings.BASE_DIR, env=environ,
                          capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.parametrize("env", [{"DEBUG": "0"}, {"DEBUG": "0", "SECRET_KEY": DEVELOPMENT_KEY}, PRODUCTION],
                         ids=["no-key", "the-public-key-on-purpose", "production-without-key"])
def test_the_server_refuses_to_start_on_the_public_key_with_debug_off(tmp_path, env):
    result = manage(tmp_path, "check", **env)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "ImproperlyConfigured" in result.stderr and "Set SECRET_KEY" in result.stderr, result.stderr
    assert str(tmp_path / "secret_key") in result.stderr  # says where `make demo` would put the key


def secret_key_of(var_dir, **env: str) -> str:
    """settings.SECRET_KEY as a fresh process started with this environment sees it."""
    result = manage(var_dir, "shell", "--no-imports", "-c", "from django.conf import settings; print(settings.SECRET_KEY)", **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_demo_key_file_is_written_once_private_and_used(tmp_path):
    write_key(tmp_path)
    path = tmp_path / "secret_key"
    key = path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(key) >= 50 and key != DEVELOPMENT_KEY
    write_key(tmp_path)
    assert path.read_text().strip() == key  # a second run keeps the key: sessions survive a restart
    assert secret_key_of(tmp_path, DEBUG="0") == key
    # Strong enough for check --deploy, and a key in the environment wins over the file.
    assert manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **PRODUCTION).returncode == 0
    env_key = secrets.token_urlsafe(50)
    assert secret_key_of(tmp_path, DEBUG="0", SECRET_KEY=env_key) == env_key


def test_no_key_file_is_written_when_the_environment_has_a_key(tmp_path):
    write_key(tmp_path, SECRET_KEY=secrets.token_urlsafe(50))
    assert not (tmp_path / "secret_key").exists()


def test_debug_runs_on_the_development_key(tmp_path):
    assert secret_key_of(tmp_path, DEBUG="1") == DEVELOPMENT_KEY


# --- passwords -----------------------------------------------------------------------------------

@pytest.mark.django_db
def test_the_four_password_validators_refuse_weak_passwords(django_user_model):
    user = django_user_model(username="margaret.hamilton", email="margaret@example.com")
    for weak in ["8302749165028", "margaret.hamilton1", "password123", "short"]:
        with pytest.raises(ValidationError):
            validate_password(weak, user)
    validate_password("tulip-orbit-canyon-42", user)  # a passphrase passes


@pytest.mark.django_db
def test_the_demo_passwords_pass_the_validators(django_user_model, tmp_path, settings):
    settings.PAIRWISE_MODELS_DIR = tmp_path
    credentials = demo_seed()
    for username, password in credentials.items():
        validate_password(password, django_user_model.objects.get(username=username))


# --- markdown preview and the render cache -------------------------------------------------------

@pytest.mark.django_db
def test_markdown_preview_refuses_a_100k_body(make_user):
    client = Client()
    client.force_login(make_user())
    url = reverse("console-markdown-preview")
    refused = client.post(url, {"text": "word " * 20_000})
    assert refused.status_code == 400 and "text" in refused.json(), refused.content[:200]
    cap = settings.PAIRWISE_MARKDOWN_PREVIEW_MAX_CHARS
    assert client.post(url, {"text": "a" * cap}).status_code == 200
    assert client.post(url, {"text": "a" * (cap + 1)}).status_code == 400


def test_markdown_render_cache_stays_within_its_byte_budget(settings):
    """Many distinct long bodies (responses, prompts, previews): the cache keeps at most its budget."""
    budget = settings.PAIRWISE_MARKDOWN_CACHE_BYTES = 256 * 1024
    markdown_render("warm *up*")  # first-call allocations are not the cache's
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(120):
            markdown_render(f"# body {i}\n\n" + f"word{i} " * 2000)  # ~14K characters in, more out
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Everything rendered is well over 3 MB; what stays is the budget plus bookkeeping.
    assert retained < 2 * budget, retained
    assert markdown_render(f"# body 119\n\n" + "word119 " * 2000).startswith("<h1>body 119</h1>")


def test_byte_bounded_lru_evicts_the_least_recently_used_and_skips_huge_entries():
    from labeling.byte_lru import ByteBoundedLRU

    cache, budget = ByteBoundedLRU(), 64 * 1024
    for i in range(500):
        cache.put(i, "x" * (1000 + i), max_bytes=budget)
        assert cache.size_bytes <= budget
    assert 0 < len(cache) < 500 and cache.get(0) is None and cache.get(499) == "x" * 1499
    cache.put("huge", "y" * budget, max_bytes=budget)  # over an eighth of the budget: not kept
    assert cache.get("huge") is None and cache.get(499) is not None
    cache.clear()
    assert cache.size_bytes == 0 and len(cache) == 0


# --- runs' params, logs, errors and endpoint URLs ------------------------------------------------

SECRET_MARKERS = ("/srv/private/base-model", "token-in-the-log", "10.0.0.5")


@pytest.fixture
def training_rows(project_factory, member, tmp_path):
    project = project_factory()
    run = TrainingRun.objects.create(
        project=project, kind=TrainingRun.Kind.REWARD, status=TrainingRun.Status.FAILED,
        params={"base": "/srv/private/base-model"}, log_tail="step 3 token-in-the-log",
        error="connection refused by http://10.0.0.5:8000/v1", worker="gpu-1",
    )
    endpoint = ModelVersion.objects.create(
        project=project, kind=ModelVersion.Kind.POLICY, name="vllm", base="http://10.0.0.5:8000/v1 · llama",
        artifact_path=str(tmp_path / "endpoint"), config={"endpoint": {"base_url": "http://10.0.0.5:8000/v1"}},
    )
    return project, run, endpoint, {role: member(project, role) for role in ("annotator", "viewer", "admin")}


def _training_urls(project, run, endpoint) -> list[str]:
    slug = project.slug
    return [
        reverse("api-training-runs", kwargs={"slug": slug}),
        reverse("api-training-run", kwargs={"slug": slug, "run_id": run.pk}),
        reverse("api-training-versions", kwargs={"slug": slug}),
        reverse("api-training-version-card", kwargs={"slug": slug, "version_id": endpoint.pk}),
        reverse("api-training-pipelines", kwargs={"slug": slug}),
        reverse("training-runs", kwargs={"slug": slug}),
        reverse("training-runs-json", kwargs={"slug": slug}),
        reverse("training-run-detail", kwargs={"slug": slug, "run_id": run.pk}),
        reverse("training-version-detail", kwargs={"slug": slug, "version_id": endpoint.pk}),
        reverse("training-version-card", kwargs={"slug": slug, "version_id": endpoint.pk}),
    ]


@pytest.mark.django_db
def test_annotators_cannot_read_runs_params_logs_errors_or_endpoint_urls(training_rows):
    project, run, endpoint, users = training_rows
    for role in ("annotator", "viewer", "admin"):
        client = Client()
        client.force_login(users[role])
        for url in _training_urls(project, run, endpoint):
            response = client.get(url)
            if role == "annotator":
                body = response.content.decode()
                assert response.status_code == 403, (url, response.status_code)
                assert not any(marker in body for marker in SECRET_MARKERS), url
            else:
                assert response.status_code == 200, (role, url, response.status_code)
    # What the oversight roles see is the real thing.
    viewer = Client()
    viewer.force_login(users["viewer"])
    detail = viewer.get(reverse("api-training-run", kwargs={"slug": project.slug, "run_id": run.pk})).json()
    assert detail["error"] == run.error and detail["params"] == run.params and detail["log_tail"] == run.log_tail


@pytest.mark.django_db
def test_annotators_are_not_sent_to_the_training_pages(training_rows):
    project, _, _, users = training_rows
    client = Client()
    client.force_login(users["annotator"])
    page = client.get(reverse("project-list")).content.decode()
    assert project.slug in page and reverse("training-runs", kwargs={"slug": project.slug}) not in page
