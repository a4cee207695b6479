"""An admin scores a reward version on a preference file from its page, in a real browser: a broken
file is refused with its line and keeps nothing, a good one (with hostile text in it and in its name)
is kept, shown on the version page, on the training page, and in the model card."""
from __future__ import annotations

import gzip
import json

import pytest
from playwright.sync_api import expect

from labeling.models import Membership
from tests.e2e.pages import watch_csp
from tests.training.conftest import REWARD, fast_params, import_preferences, separable_records
from training.models import ModelVersion
from training.services.reward import reward_model_train
from training.services.runs import run_create

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

HOSTILE = "<img src=x onerror=alert(1)>\u202e"


def test_an_admin_keeps_a_score_on_other_data_from_the_version_page(page_for, live_server, make_user, project_factory,
                                                                     tiny_reward_base, models_dir, tmp_path):
    project = project_factory()
    admin = make_user("rm-admin")
    Membership.objects.create(project=project, user=admin, role=Membership.Role.ADMIN)
    import_preferences(project, separable_records(24))
    version = reward_model_train(run_id=run_create(project=project, kind=REWARD,
                                                   params=fast_params(tiny_reward_base, epochs=8)).pk)
    page = page_for(admin)
    violations = watch_csp(page)
    page.goto(f"{live_server.url}/training/{project.slug}/versions/{version.pk}/")
    expect(page.locator("p#other-data")).to_contain_text(f"--version {version.pk} --data FILE --record NAME")

    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(separable_records(1)[0]) + "\n" + '{"prompt": "p", "chosen": "a"}\n')
    page.set_input_files("#score-file input[name=file]", str(broken))
    page.fill("#score-file input[name=name]", "broken")
    page.locator("#score-file").get_by_role("button", name="Score and keep").click()
    expect(page.locator(".messages")).to_contain_text("broken.jsonl:2: missing or non-string rejected")
    assert "evaluations" not in ModelVersion.objects.get(pk=version.pk).metrics

    others = [{**r, "prompt": f"{HOSTILE} never seen {i}"} for i, r in enumerate(separable_records(7))]
    good = tmp_path / "other.jsonl.gz"
    with gzip.open(good, "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(r, ensure_ascii=False) for r in others))
    page.set_input_files("#score-file input[name=file]", str(good))
    page.fill("#score-file input[name=name]", f"other {HOSTILE}")
    page.locator("#score-file").get_by_role("button", name="Score and keep").click()
    expect(page.locator(".messages")).to_contain_text("on 7 pairs")
    kept = ModelVersion.objects.get(pk=version.pk).metrics["evaluations"][f"other {HOSTILE}"]
    assert kept["pairs"] == 7 and kept["trained_prompts"] == 0 and kept["source"] == "other.jsonl.gz"
    row = page.locator("table#other-data tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(0)).to_have_text(f"other {HOSTILE}")
    expect(row.locator("td").nth(1)).to_have_text("7")
    expect(row.locator("td").nth(2)).to_have_text(f"{kept['accuracy']:.3f}")
    expect(row.locator("td").nth(5)).to_have_text("0")  # none of these prompts was trained on
    assert page.locator("img[src=x]").count() == 0

    page.goto(f"{live_server.url}/training/{project.slug}/")
    cell = page.locator("td.other-data").first
    cell.locator("summary").click()
    expect(cell.locator("tbody tr")).to_contain_text(f"other {HOSTILE}")
    page.goto(f"{live_server.url}/training/{project.slug}/versions/{version.pk}/card/")
    expect(page.locator("body")).to_contain_text("On other data")
    assert page.locator("img[src=x]").count() == 0
    assert violations == [], violations
