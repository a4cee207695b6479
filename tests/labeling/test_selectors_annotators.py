"""Who is excluded (labeling.selectors.annotators), and the reads that leave them out: the label models'
votes and the annotators tab's rows."""
from __future__ import annotations

import pytest

from labeling.selectors.annotators import annotator_is_excluded, excluded_annotator_ids, member_user_get
from labeling.selectors.console import member_rows
from labeling.selectors.label_models import label_model_votes
from labeling.services.annotators import annotator_exclude, annotator_include
from labeling.services.projects import membership_set
from tests.labeling.judging import judge, make_tasks

pytestmark = pytest.mark.django_db


def test_excluded_ids_are_per_project_and_follow_include(project_factory, member):
    project, other = project_factory(), project_factory()
    admin, a, b = member(project, "admin"), member(project, "annotator"), member(project, "annotator")
    membership_set(project=other, user=a, role="annotator")  # excluded in one project, not in the other
    annotator_exclude(project=project, user=a, by=admin)
    assert excluded_annotator_ids(project=project) == {a.pk}
    assert excluded_annotator_ids(project=other) == set()
    assert annotator_is_excluded(project=project, user=a) and not annotator_is_excluded(project=other, user=a)
    assert not annotator_is_excluded(project=project, user=b)
    annotator_include(project=project, user=a, by=admin)
    assert excluded_annotator_ids(project=project) == set()


def test_member_user_get_finds_members_only(project_factory, member, make_user):
    project = project_factory()
    user, stranger = member(project, "annotator"), make_user()
    user.is_active = False
    user.save()
    assert member_user_get(project=project, user_id=user.pk) == user  # a deactivated member still counts
    assert member_user_get(project=project, user_id=stranger.pk) is None


def test_label_model_votes_leave_excluded_annotators_out(project_factory, member):
    project = project_factory(mode="pairwise", overlap=3)
    tasks = make_tasks(project, 4)
    admin, good, spam = member(project, "admin"), member(project, "annotator"), member(project, "annotator")
    for task in tasks:
        judge(task, good, [[0], [1]])
        judge(task, spam, [[1], [0]])
    votes, _, judgments = label_model_votes(project=project)
    assert judgments == 8 and {v.annotator for v in votes} == {good.pk, spam.pk}

    annotator_exclude(project=project, user=spam, by=admin, reason="random clicks")
    votes, _, judgments = label_model_votes(project=project)
    assert judgments == 4 and {v.annotator for v in votes} == {good.pk}

    annotator_include(project=project, user=spam, by=admin)
    assert label_model_votes(project=project)[2] == 8


def test_member_rows_carry_the_exclusion(project_factory, member):
    project = project_factory()
    admin, user = member(project, "admin"), member(project, "annotator")
    annotator_exclude(project=project, user=user, by=admin, reason="spam")
    rows = {row["user_id"]: row for row in member_rows(project=project)}
    assert rows[user.pk]["excluded_at"] is not None
    assert (rows[user.pk]["excluded_by"], rows[user.pk]["exclusion_reason"]) == (admin.username, "spam")
    assert (rows[admin.pk]["excluded_at"], rows[admin.pk]["excluded_by"], rows[admin.pk]["exclusion_reason"]) == (
        None, None, "")
