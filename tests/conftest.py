"""Shared fixtures. The suite runs on Postgres; on SQLite the Postgres-only tests are deselected
and named at the end of the run, so nothing is skipped silently."""
from __future__ import annotations

import itertools

import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

ON_POSTGRES = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
_not_run: list[str] = []


def pytest_collection_modifyitems(config, items):
    if ON_POSTGRES:
        return
    dropped = [item for item in items if item.get_closest_marker("postgres_only")]
    _not_run.extend(item.nodeid for item in dropped)
    items[:] = [item for item in items if not item.get_closest_marker("postgres_only")]
    config.hook.pytest_deselected(items=dropped)


def pytest_terminal_summary(terminalreporter):
    if _not_run:
        terminalreporter.section("Postgres-only tests NOT run on this database")
        for nodeid in _not_run:
            terminalreporter.write_line(nodeid)


_counter = itertools.count()


@pytest.fixture
def make_user(django_user_model):
    def make(username: str | None = None, **fields):
        name = username or f"user{next(_counter)}"
        return django_user_model.objects.create_user(username=name, password="pw-" + name, **fields)

    return make


@pytest.fixture
def project_factory(make_user):
    from labeling.services.projects import project_create

    def make(**fields):
        n = next(_counter)
        fields.setdefault("name", f"Project {n}")
        fields.setdefault("slug", f"project-{n}")
        return project_create(**fields)

    return make


@pytest.fixture
def member(make_user):
    """member(project, role) -> a user holding that role in the project."""
    from labeling.services.projects import membership_set

    def make(project, role: str):
        user = make_user()
        membership_set(project=project, user=user, role=role)
        return user

    return make


@pytest.fixture
def api_client():
    def make(user=None, token: bool = True) -> APIClient:
        client = APIClient()
        if user is not None:
            if token:
                key, _ = Token.objects.get_or_create(user=user)
                client.credentials(HTTP_AUTHORIZATION=f"Token {key.key}")
            else:
                client.force_login(user)
        return client

    return make
