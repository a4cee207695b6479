"""Fixtures for the browser tests: one chromium per test module (Debian's, via Playwright) and a
logged-in page per user against the live server."""
from __future__ import annotations

import os

import pytest

# Playwright's sync API runs an event loop in this thread; the ORM calls in the tests are still
# plain synchronous calls between browser steps.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
from playwright import sync_api  # noqa: E402

# The end-to-end loop runs on the training tests' real Celery worker and tiny models.
from tests.training.conftest import (  # noqa: E402,F401  (fixtures)
    celery_worker, celery_worker_factory, models_dir, tiny_policy, tiny_reward_base,
)

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page_for(browser, live_server):
    contexts = []

    def make(user, *, width=1280, height=800):
        from django.test import Client

        client = Client()
        client.force_login(user)
        context = browser.new_context(viewport={"width": width, "height": height})
        context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        return page

    yield make
    for context in contexts:
        context.close()
