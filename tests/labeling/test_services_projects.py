import pytest
from django.core.exceptions import ValidationError

from labeling.models import ComparisonTask, Prompt
from labeling.services.projects import project_create, project_restore, project_soft_delete, project_update

pytestmark = pytest.mark.django_db


def _task(project, judgments: int, status: str, is_gold: bool = False) -> ComparisonTask:
    prompt = Prompt.objects.create(project=project, external_id=f"p{judgments}{status}{is_gold}", text="q")
    return ComparisonTask.objects.create(project=project, prompt=prompt, judgments_count=judgments, status=status,
                                         is_gold=is_gold, gold_ranking=[] if is_gold else None)


def test_pairwise_forces_k2_and_validation_errors_are_field_errors(make_user):
    project = project_create(name="P", slug="p", mode="pairwise", responses_per_task=5, created_by=make_user())
    assert project.responses_per_task == 2 and project.memberships.get().role == "admin"
    with pytest.raises(ValidationError) as caught:
        project_create(name="Q", slug="q", bogus=1)
    assert "bogus" in caught.value.message_dict


def test_raising_overlap_reopens_and_lowering_closes(project_factory):
    project = project_factory(overlap=1)
    done = _task(project, 1, "complete")
    gold = _task(project, 3, "open", is_gold=True)
    project_update(project=project, overlap=2)
    done.refresh_from_db()
    assert done.status == "open"
    project_update(project=project, overlap=1)
    done.refresh_from_db()
    gold.refresh_from_db()
    assert done.status == "complete" and gold.status == "open"


def test_soft_delete_and_restore(project_factory):
    project = project_factory()
    assert project_soft_delete(project=project).deleted_at is not None
    assert project_restore(project=project).deleted_at is None
