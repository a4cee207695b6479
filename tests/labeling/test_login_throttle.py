"""Login throttling (labeling.services.auth) on the site's login page and the admin's."""
from __future__ import annotations

import time

import pytest
from django.core.cache import cache
from django.test import override_settings

from labeling.services.auth import login_attempt_check, login_attempt_record, login_refusal_message

pytestmark = pytest.mark.django_db
TOO_MANY = "Too many failed login attempts. Try again in 5 minutes."


@pytest.fixture(autouse=True)
def fresh_cache(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # ~50 logins per test
    cache.clear()
    yield
    cache.clear()


def login(client, username, password, path="/login/"):
    return client.post(path, {"username": username, "password": password})


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_eleventh_attempt_is_refused_even_with_the_right_password(client, make_user):
    user, other = make_user(), make_user()
    for _ in range(10):
        response = login(client, user.username, "wrong")
        assert response.status_code == 200 and "Please enter a correct username and password" in response.content.decode()
    response = login(client, user.username, "pw-" + user.username)
    assert response.status_code == 429
    assert TOO_MANY in response.content.decode() and not logged_in(client)
    # Another user from the same address is not affected.
    assert login(client, other.username, "pw-" + other.username).status_code == 302 and logged_in(client)


def test_a_success_clears_the_username_count(client, make_user):
    user = make_user()
    for _ in range(9):
        login(client, user.username, "wrong")
    assert login(client, user.username, "pw-" + user.username).status_code == 302
    client.logout()
    for _ in range(9):
        assert login(client, user.username, "wrong").status_code == 200
    assert login(client, user.username, "pw-" + user.username).status_code == 302


def test_the_username_count_ignores_case_and_spaces(client, make_user):
    make_user("alice")
    for name in ["alice", "ALICE", " Alice"] * 4:
        login(client, name, "wrong")
    assert login(client, "alice", "pw-alice").status_code == 429


@override_settings(PAIRWISE_LOGIN_MAX_FAILURES_PER_IP=5)
def test_many_usernames_from_one_address_are_refused(client, make_user):
    victim = make_user()
    for i in range(5):
        login(client, f"guess{i}", "wrong")
    response = login(client, victim.username, "pw-" + victim.username)
    assert response.status_code == 429 and not logged_in(client)
    # From another address the same user gets in.
    assert client.post("/login/", {"username": victim.username, "password": "pw-" + victim.username},
                       REMOTE_ADDR="10.0.0.9").status_code == 302


def test_the_refusal_ends_with_the_window(client, make_user, monkeypatch):
    user = make_user()
    for _ in range(10):
        login(client, user.username, "wrong")
    assert login(client, user.username, "pw-" + user.username).status_code == 429
    later = time.time() + 301  # the cache expires its keys by the same clock
    monkeypatch.setattr(time, "time", lambda: later)
    assert login(client, user.username, "pw-" + user.username).status_code == 302


def test_the_admin_login_is_throttled_too(client, make_user):
    staff = make_user(is_staff=True, is_superuser=True)
    for _ in range(10):
        login(client, staff.username, "wrong", path="/admin/login/")
    response = login(client, staff.username, "pw-" + staff.username, path="/admin/login/")
    assert TOO_MANY in response.content.decode() and not logged_in(client)


def test_check_reports_the_wait_and_the_message_says_minutes():
    for _ in range(10):
        login_attempt_record(username="bob", ip="1.2.3.4", success=False)
    wait = login_attempt_check(username="bob", ip="1.2.3.4")
    assert 290 <= wait <= 300
    assert login_attempt_check(username="carol", ip="1.2.3.4") == 0
    assert login_refusal_message(wait_s=wait) == TOO_MANY
    assert login_refusal_message(wait_s=30) == "Too many failed login attempts. Try again in 1 minute."
