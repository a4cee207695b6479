"""Database constraints hold even when code bypasses the services."""
import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from labeling.models import Assignment, ComparisonTask, Judgment, Membership, PreferencePair, Project, Prompt, Response

pytestmark = pytest.mark.django_db


def _raises_integrity(fn):
    with pytest.raises(IntegrityError), transaction.atomic():
        fn()


@pytest.fixture
def task(project_factory):
    project = project_factory(mode="pairwise")
    prompt = Prompt.objects.create(project=project, external_id="p1", text="hi")
    a = Response.objects.create(prompt=prompt, text="a", source="m")
    b = Response.objects.create(prompt=prompt, text="b", source="m")
    task = ComparisonTask.objects.create(project=project, prompt=prompt)
    task.slots.create(response=a, position=0)
    task.slots.create(response=b, position=1)
    return task, a, b


@pytest.mark.parametrize("field,value", [("responses_per_task", 1), ("responses_per_task", 10), ("overlap", 0),
                                         ("gold_rate", 1.5), ("lease_seconds", 1)])
def test_project_check_constraints(field, value):
    _raises_integrity(lambda: Project.objects.create(name="x", slug="x", **{field: value}))


def test_prompt_external_id_unique_per_project(project_factory):
    one, two = project_factory(), project_factory()
    Prompt.objects.create(project=one, external_id="same", text="a")
    Prompt.objects.create(project=two, external_id="same", text="a")  # other project: fine
    _raises_integrity(lambda: Prompt.objects.create(project=one, external_id="same", text="b"))


def test_membership_unique(project_factory, make_user):
    project, user = project_factory(), make_user()
    Membership.objects.create(project=project, user=user, role="viewer")
    _raises_integrity(lambda: Membership.objects.create(project=project, user=user, role="admin"))


def test_task_slots_unique(task):
    task, a, _ = task
    _raises_integrity(lambda: task.slots.create(response=a, position=5))
    other = Response.objects.create(prompt=task.prompt, text="c", source="m")
    _raises_integrity(lambda: task.slots.create(response=other, position=0))


def test_gold_task_needs_answer(task):
    task, _, _ = task
    _raises_integrity(lambda: ComparisonTask.objects.create(project=task.project, prompt=task.prompt, is_gold=True))


def test_assignment_unique_per_task_and_annotator(task, make_user):
    task, _, _ = task
    user, now = make_user(), timezone.now()

    def assign():
        Assignment.objects.create(project=task.project, task=task, annotator=user, leased_at=now, expires_at=now)

    assign()
    _raises_integrity(assign)


def test_judgment_idempotency_key_unique_and_pair_distinct(task):
    task, a, b = task

    def judge():
        return Judgment.objects.create(project=task.project, task=task, ranking=[[a.pk], [b.pk]], idempotency_key="k")

    judgment = judge()
    _raises_integrity(judge)
    _raises_integrity(lambda: PreferencePair.objects.create(
        project=task.project, judgment=judgment, prompt=task.prompt, chosen=a, rejected=a))
    PreferencePair.objects.create(project=task.project, judgment=judgment, prompt=task.prompt, chosen=a, rejected=b)
    _raises_integrity(lambda: PreferencePair.objects.create(
        project=task.project, judgment=judgment, prompt=task.prompt, chosen=a, rejected=b))
