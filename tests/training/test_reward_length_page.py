"""A reward version's accuracy by length bucket and against the length-only baseline: stored from its
validation, returned by reward_model_evaluate, shown in the runs page's versions table."""
from __future__ import annotations

import pytest
from django.urls import reverse

from labeling.models import Membership
from tests.training.conftest import REWARD, fast_params, import_preferences, separable_records
from training.services.reward import reward_model_evaluate, reward_model_train
from training.services.runs import run_create


@pytest.mark.django_db
def test_reward_versions_report_accuracy_by_length(project_factory, tiny_reward_base, models_dir, member, client):
    project = project_factory()
    records = separable_records(40)
    import_preferences(project, records)
    version = reward_model_train(run_id=run_create(project=project, kind=REWARD,
                                                   params=fast_params(tiny_reward_base, epochs=8)).pk)
    held = version.metrics["val_comparisons"]
    assert held > 0
    # Every separable pair's chosen answer is the longer one (by more than 50%).
    assert version.metrics["val_length_baseline"] == 1.0
    assert [(b["bucket"], b["pairs"]) for b in version.metrics["val_by_length"]] == [("chosen longer by >50%", held)]

    swapped = [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} for r in records[:6]]
    result = reward_model_evaluate(version=version, records=records[:6] + swapped, with_margins=True)
    assert result["pairs"] == 12 and result["length_baseline"] == 0.5 and len(result["margins"]) == 12
    assert [b["bucket"] for b in result["by_length"]] == ["chosen shorter by >50%", "chosen longer by >50%"]
    # Swapping a pair negates its margin: what is right where the longer answer is chosen is wrong where it is not.
    assert (result["pairs_shorter_chosen"], result["pairs_longer_chosen"]) == (6, 6)
    assert result["accuracy_shorter_chosen"] == pytest.approx(1 - result["accuracy_longer_chosen"])
    assert result["accuracy_longer_chosen"] == pytest.approx(sum(m > 0 for m in result["margins"][:6]) / 6)
    assert result["length_margin_corr"] > 0 and version.metrics["val_pairs_longer_chosen"] == held
    assert version.metrics["val_accuracy_longer_chosen"] == pytest.approx(version.metrics["val_accuracy"])
    assert "margins" not in reward_model_evaluate(version=version, records=records[:2])

    client.force_login(member(project, Membership.Role.VIEWER))
    html = client.get(reverse("training-runs", kwargs={"slug": project.slug})).content.decode()
    assert "Length baseline" in html and "chosen longer by &gt;50%" in html and "<style" not in html
    assert '<td class="length-baseline">1.000</td>' in html
