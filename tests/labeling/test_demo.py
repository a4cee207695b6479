import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.hashers import identify_hasher
from django.core.management import call_command

from labeling.models import ComparisonTask, Demonstration, Membership

pytestmark = pytest.mark.django_db


def test_seed_demo_is_idempotent_and_prints_working_passwords(capsys):
    call_command("seed_demo")
    call_command("seed_demo")
    out = capsys.readouterr().out.split("Demo users")[-1]
    passwords = dict(line.split() for line in out.strip().splitlines()[1:])
    assert set(passwords) == {"admin", "annotator1", "annotator2"}
    for username, password in passwords.items():
        assert authenticate(username=username, password=password) is not None
    assert ComparisonTask.objects.filter(project__slug="demo").count() == 12
    assert Demonstration.objects.filter(project__slug="demo").count() == 3
    assert Membership.objects.filter(project__slug="demo", role="annotator").count() == 2


def test_seed_demo_passwords_are_printed_once_and_kept_nowhere(capsys, caplog, django_user_model):
    call_command("seed_demo")
    first = capsys.readouterr().out
    old = dict(line.split() for line in first.split("Demo users")[-1].strip().splitlines()[1:])
    call_command("seed_demo")
    out = capsys.readouterr().out
    passwords = dict(line.split() for line in out.split("Demo users")[-1].strip().splitlines()[1:])
    for username, password in passwords.items():
        assert out.count(password) == 1 and password not in caplog.text
        assert password != old[username] and len(password) >= 16
        user = django_user_model.objects.get(username=username)
        assert identify_hasher(user.password) and password not in user.password  # only a hash is stored
        assert authenticate(username=username, password=old[username]) is None  # a re-run retires the old ones
