import pytest

from config.auth import ModelBackend

pytestmark = pytest.mark.django_db


def test_get_user_loads_the_user_with_its_fields(make_user):
    user = make_user(email="a@example.com")
    loaded = ModelBackend().get_user(user.pk)
    assert (loaded.pk, loaded.username, loaded.email) == (user.pk, user.username, "a@example.com")
    assert loaded.check_password("pw-" + user.username)


def test_get_user_refuses_inactive_and_unknown_users(make_user):
    user = make_user(is_active=False)
    assert ModelBackend().get_user(user.pk) is None
    assert ModelBackend().get_user(user.pk + 1000) is None


def test_session_login_uses_this_backend(client, make_user):
    user = make_user()
    assert client.login(username=user.username, password="pw-" + user.username)
    assert client.session["_auth_user_backend"] == "config.auth.ModelBackend"
