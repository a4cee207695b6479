"""Schemathesis over every operation of /api/schema/, as the admin of a seeded project.

Checks: no 5xx, every status code documented, every JSON body valid against its documented schema.
Two phases, both bounded and repeatable: fuzzing (EXAMPLES_PER_OPERATION derandomized examples per
operation, valid and invalid data) and schemathesis' coverage phase limited to invalid data (every
boundary and type violation the schema defines, once: about 1,700 requests, and the phase that found
the 500s). Other HTTP methods are left out of it; tests/test_permissions.py owns the method table.
About 2 minutes on a 2-core machine.

Schemathesis runs the operations as subtests of one test, reported one by one, in one database
transaction seeded once; each generated request runs in a savepoint that is rolled back, so a DELETE
or a promote in one example does not change what the next one (or the next operation) sees.
Path parameters point at real rows most of the time (`slug` always), so the handlers run past their
lookups. Queued training runs and export jobs send their Celery task on commit, and the test
transaction never commits: nothing reaches a broker or a worker.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from config.wsgi import application
from labeling.models import ExportJob, Membership
from labeling.services.assignment import task_assign_next
from labeling.selectors.exports import ExportFilters
from labeling.services.exports import dataset_snapshot_create
from labeling.services.projects import membership_set, project_create
from tests.labeling.judging import import_rows, judge
from training.models import ModelVersion, TrainingRun

EXAMPLES_PER_OPERATION = 15
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]
CONFIG = schemathesis.Config.from_dict({
    "phases": {"coverage": {"unexpected-methods": [], "generation": {"mode": "negative"}}},
    "generation": {"max-examples": EXAMPLES_PER_OPERATION, "deterministic": True},
})
schema = schemathesis.openapi.from_wsgi("/api/schema/", application, config=CONFIG)


@dataclass
class Seeded:
    headers: dict[str, str]
    ids: dict[str, int]
    slug: str


@pytest.fixture
def wsgi_in_test_transaction():
    """Django's test client does the same: a request must not close the connection that holds the
    test transaction (close_old_connections would, since autocommit is off inside it)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def seeded(django_user_model, settings, tmp_path, wsgi_in_test_transaction) -> Seeded:
    settings.PAIRWISE_EXPORTS_DIR = tmp_path
    # Staff too, so that creating projects is exercised rather than refused every time.
    admin = django_user_model.objects.create_user(username="fuzz-admin", password="pw-fuzz-admin", is_staff=True)
    annotator = django_user_model.objects.create_user(username="fuzz-annotator", password="pw-fuzz")
    project = project_create(name="Fuzz", slug="fuzz", mode="pairwise", created_by=admin)
    membership_set(project=project, user=annotator, role=Membership.Role.ANNOTATOR)
    import_rows(
        project,
        {"id": "pair1", "prompt": "Which is polite?", "chosen": "Happy to help!", "rejected": "No."},
        {"id": "pair2", "prompt": "Say hi", "chosen": "Hi there", "rejected": "go away"},
        {"id": "open1", "prompt": "Compare these", "responses": [{"text": "one", "source": "m1"},
                                                                  {"text": "two", "source": "m2"}]},
        {"id": "open2", "prompt": "And these", "responses": ["three", "four"]},
        {"id": "solo", "prompt": "Just a prompt"},
    )
    judge(project.tasks.get(prompt__external_id="open1"), annotator, [[0], [1]])  # a human vote, two sources
    assignment = task_assign_next(annotator=admin, project=project).assignment
    assert assignment is not None
    snapshot = dataset_snapshot_create(project=project, fmt="trl", filters=ExportFilters(), user=admin)
    job = ExportJob.objects.create(project=project, format="trl", status=ExportJob.Status.SUCCEEDED,
                                   path=snapshot.path, rows=snapshot.rows, created_by=admin)
    run = TrainingRun.objects.create(project=project, kind=TrainingRun.Kind.REWARD, requested_by=admin)
    policy = ModelVersion.objects.create(project=project, kind=ModelVersion.Kind.POLICY, name="policy-1",
                                         base="base", artifact_path=str(tmp_path / "missing-policy"))
    reward = ModelVersion.objects.create(project=project, kind=ModelVersion.Kind.REWARD, name="reward-1",
                                         base="base", artifact_path=str(tmp_path / "missing-reward"))
    token, _ = Token.objects.get_or_create(user=admin)
    return Seeded(
        headers={"Authorization": f"Token {token.key}"},
        slug=project.slug,
        ids={
            "assignment_id": assignment.pk, "job_id": job.pk, "snapshot_id": snapshot.pk, "run_id": run.pk,
            "prompt_id": project.prompts.order_by("id").first().pk,
            "version_id": policy.pk, "reward_version_id": reward.pk, "user_id": annotator.pk,
        },
    )


def _aim_at_seeded_rows(case, seeded: Seeded) -> None:
    """slug always names the seeded project (a random one is a 404 and tests nothing further); an id
    names a seeded row unless the generated value is a multiple of 4, which keeps some not-found cases."""
    params = dict(case.path_parameters or {})
    if "slug" in params:
        params["slug"] = seeded.slug
    for name, value in params.items():
        if name in seeded.ids and not (isinstance(value, int) and value % 4 == 0):
            # Only reward versions can be evaluated; promote and demote take a policy.
            real = "reward_version_id" if case.path.endswith("/evaluate/") else name
            params[name] = seeded.ids[real]
    case.path_parameters = params


@pytest.mark.django_db
@schema.parametrize()
@hypothesis_settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
                     suppress_health_check=list(HealthCheck))
def test_api_operation(case, seeded):
    _aim_at_seeded_rows(case, seeded)
    with transaction.atomic():
        case.call_and_validate(headers=seeded.headers, checks=CHECKS)
        transaction.set_rollback(True)
