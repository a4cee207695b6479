"""Loaded by pytest.ini (`-p tests.pytest_env`) before Django reads its settings.

A test run needs no SECRET_KEY in its environment: each run gets a random one here, and the worker,
server and manage.py processes the tests start inherit it. Production behaviour is untouched
(tests/test_settings.py starts manage.py without it and sees the server refuse to start)."""
import os
import secrets

os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
