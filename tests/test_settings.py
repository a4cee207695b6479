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
    environ = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "PAIRWISE_HTTPS"}}
    environ.update(PAIRWISE_VAR_DIR=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=settings.BASE_DIR, env=environ, capture_output=True, text=True, timeout=300,
    )


def test_production_environment_passes_check_deploy(tmp_path):
    result = check_deploy(tmp_path, SECRET_KEY=secrets.token_urlsafe(50), **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(("env", "warning"), [
    (dict(PRODUCTION), "security.W009"),  # no SECRET_KEY: the local fallback key
    ({"SECRET_KEY": secrets.token_urlsafe(50), "DEBUG": "0"}, "security.W008"),  # no PAIRWISE_HTTPS
])
def test_check_deploy_fails_without_a_secret_key_or_https(tmp_path, env, warning):
    result = check_deploy(tmp_path, **env)
    assert result.returncode != 0 and warning in result.stderr, result.stdout + result.stderr
