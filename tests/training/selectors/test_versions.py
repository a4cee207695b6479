"""training.selectors.versions: what a model card says about a version (model_card_facts)."""
from __future__ import annotations

import pytest
import yaml
from django.urls import reverse

from labeling.models import Membership
from training.ml.card import model_card
from training.selectors.versions import base_model_name, model_card_facts
from training.services.versions import model_version_register

HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
RUN_STATS = {"seconds": 12.5, "train_seconds": 11.0, "comparisons_per_s": 3.25, "processes": 1, "train_loss": 0.4,
             "bias": 0.1, "groups": 40, "comparisons": 120}
RESULTS = {"val_accuracy": 0.7312345, "val_log_loss": 0.55, "val_length_baseline": 0.52, "val_groups": 25,
           "val_comparisons": 75}


def _front(text: str) -> dict:
    return yaml.safe_load(text.split("---\n")[1])


@pytest.fixture
def versions(project_factory, tmp_path, db):
    (tmp_path / "model").mkdir()
    (tmp_path / "rm").mkdir()
    base = model_version_register(project=None, kind="reward", name="model", base=str(tmp_path / "model"),
                                  artifact_path=tmp_path / "model", config={"role": "base", "model_id": HUB_ID})
    project = project_factory(slug="cards")
    trained = model_version_register(project=project, kind="reward", name="cards-reward-run1", base=base.artifact_path,
                                     artifact_path=tmp_path / "rm", parent=base, config={"base_model": base.artifact_path},
                                     metrics={**RUN_STATS, **RESULTS, "history": [{"step": 1, "loss": 0.7}]})
    return project, base, trained


def test_model_index_holds_only_evaluation_results_and_base_model_is_the_hub_id(versions, tmp_path):
    _, _, trained = versions
    text = model_card(model_card_facts(version=trained))
    meta = _front(text)
    assert meta["base_model"] == HUB_ID and str(tmp_path) not in text  # no local path, the config's included
    [result] = meta["model-index"][0]["results"]
    assert {m["type"] for m in result["metrics"]} == {"val_accuracy", "val_log_loss"}
    assert result["dataset"]["name"] == "cards held-out prompts" and result["dataset"]["split"] == "held-out"
    front = text.split("---\n")[1]
    for stat in ("seconds", "comparisons_per_s", "processes", "train_loss"):
        assert stat not in front  # run statistics stay out of the metadata ...
    body = text.split("---\n", 2)[2]
    assert "| comparisons\\_per\\_s | 3.25 |" in body  # ... in the body, rounded for reading
    assert "| val\\_accuracy | 0.7312 |" in body and "| val\\_length\\_baseline | 0.52 |" in body
    assert "A reward model trained by Pairwise" in body


def test_a_shared_base_gets_its_own_card_and_no_path_is_named(versions, tmp_path):
    project, base, _ = versions
    text = model_card(model_card_facts(version=base))
    assert _front(text)["base_model"] == HUB_ID and str(tmp_path) not in text
    assert "trained by Pairwise" not in text and "Pairwise did not train it" in text and "reward backbone" in text
    # A backbone given as a folder nobody registered is named by the folder, never by its path.
    (tmp_path / "elsewhere").mkdir()
    other = model_version_register(project=project, kind="reward", name="x", base=str(tmp_path / "my-backbone"),
                                   artifact_path=tmp_path / "elsewhere")
    assert base_model_name(version=other) == "my-backbone"
    hub = model_version_register(project=project, kind="reward", name="y", base="org/some-model",
                                 artifact_path=tmp_path / "elsewhere")
    assert base_model_name(version=hub) == "org/some-model"


def test_the_version_page_shows_a_formatted_table_and_the_raw_json_behind_a_link(versions, member, client):
    project, _, trained = versions
    client.force_login(member(project, Membership.Role.VIEWER))
    html = client.get(reverse("training-version-detail", args=[project.slug, trained.pk])).content.decode()
    table = html.split('<table class="metrics">', 1)[1].split("</table>", 1)[0]
    assert "Held-out accuracy" in table and "<td class=\"value\">0.731</td>" in table
    assert "0.7312345" not in table and "Total time" in table and "12.5 s" in table
    assert "history" not in table  # long lists stay in the raw JSON
    raw = html.split('id="metrics-json"', 1)[1].split("</details>", 1)[0]
    assert "<summary>" in raw and "0.7312345" in raw and "&quot;history&quot;" in raw
