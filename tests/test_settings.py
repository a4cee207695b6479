"""Production settings come from the environment and pass `manage.py check --deploy`."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest
from django.conf import settings

PRODUCTION = {"PAIRWISE_HTTPS": "1", "DEBUG": "0", "ALLOWED_HOSTS": "pairwise.example.com"}


def check_deploy(tmp_path, **env: str) -> subprocess.CompletedProcess:
    # Only what the case sets: the test process's own variables (DJANGO_ALLOW_ASYNC_UNSAFE from the
    # browser tests, say) are not a production environment.
    environ = {"PATH": os.environ.get("PATH", ""), "PAIRWISE_VAR_DIR": str(tmp_path), **env}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=settings.BASE_DIR, env=environ, capture_output=True, text=True, timeout=300,
    )


def test_production_environment_passes_check_deploy(tmp_path):
    result = check_deploy(tmp_path, SECRET_KEY=secrets.token_urlsafe(50), **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(("env", "warning"), [
    # A weak key. With none at all the server does not start (tests/security/test_defaults.py).
    ({**PRODUCTION, "SECRET_KEY": "too-short"}, "security.W009"),
    ({"SECRET_KEY": secrets.token_urlsafe(50), "DEBUG": "0"}, "security.W008"),  # no PAIRWISE_HTTPS
])
def test_check_deploy_fails_with_a_weak_secret_key_or_without_https(tmp_path, env, warning):
    result = check_deploy(tmp_path, **env)
    assert result.returncode != 0 and warning in result.stderr, result.stdout + result.stderr


def run_python(tmp_path, code: str, **env: str) -> str:
    environ = {**os.environ, "PAIRWISE_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "config.settings", **env}
    result = subprocess.run([sys.executable, "-c", "import django; django.setup(); " + code], cwd=settings.BASE_DIR,
                            env=environ, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_cache_url_shares_the_login_counts_between_processes(tmp_path):
    """Two processes, as two gunicorn workers: failures counted in one refuse the login in the other."""
    cache_url = os.environ.get("TEST_CACHE_URL", f"file://{tmp_path / 'cache'}")
    record = "from labeling.services import auth; " + "".join(
        "auth.login_attempt_record(username='bob', ip='x', success=False); " for _ in range(10))
    check = "from labeling.services import auth; print(auth.login_attempt_check(username='bob', ip='y'))"
    run_python(tmp_path, record, CACHE_URL=cache_url)
    assert 0 < int(run_python(tmp_path, check, CACHE_URL=cache_url)) <= 300


def test_cache_url_picks_the_backend(tmp_path):
    code = "from django.core.cache import caches; print(type(caches['default']).__name__)"
    assert run_python(tmp_path, code, CACHE_URL="redis://127.0.0.1:6379/1") == "RedisCache"  # no connection yet
    assert run_python(tmp_path, code, CACHE_URL=f"file://{tmp_path}") == "FileBasedCache"
    assert run_python(tmp_path, code, CACHE_URL="") == "LocMemCache"
