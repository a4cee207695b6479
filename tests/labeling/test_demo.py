import pytest
from django.contrib.auth import authenticate
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
