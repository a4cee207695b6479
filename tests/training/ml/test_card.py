"""Model cards: the YAML front matter parses, every section is there, missing facts say "not
recorded", and hostile text (markdown, HTML, newlines, YAML) cannot break the front matter."""
from __future__ import annotations

import yaml

from training.ml.card import CARD_FILE, NOT_RECORDED, ModelCardFacts, model_card, write_model_card

SECTIONS = ["## Lineage", "## Training data", "## Training config", "## Evaluation", "### Safety flag rates",
            "## Intended use", "## Limitations", "## Risks", "Misinformation", "Bias", "Transparency"]
HOSTILE = 'evil\n---\nlicense: "gpl"\n<script>alert(1)</script> **bold** | # x'


def front(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("\n---\n")[0][4:])


def test_full_card_front_matter_and_sections(tmp_path):
    facts = ModelCardFacts(
        name="rm-v3", kind="reward", method="reward", license="apache-2.0", base_model="sentence-transformers/all-MiniLM-L6-v2",
        parent="v2", project="demo", snapshot_sha256="ab" * 32, datasets=["pairwise/demo-snapshot-7"],
        prompts=120, judgments=480, annotators=5, agreement=0.7234, training_config={"lr": 3e-5, "epochs": 1},
        metrics={"val_accuracy": 0.675, "val_log_loss": 0.61}, flag_rates={"harmful": 0.02}, evaluation="held-out prompts",
    )
    path = write_model_card(tmp_path, facts)
    assert path == tmp_path / CARD_FILE
    text = path.read_text()
    meta = front(text)
    assert meta["license"] == "apache-2.0" and meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["datasets"] == ["pairwise/demo-snapshot-7"] and "reward-model" in meta["tags"]
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    assert {m["type"]: m["value"] for m in metrics} == {"val_accuracy": 0.675, "val_log_loss": 0.61}
    for section in SECTIONS:
        assert section in text
    assert "- Agreement: 0.723" in text and "- Annotators (pseudonymous): 5" in text and "ab" * 32 in text
    assert '"epochs": 1' in text and "| harmful | 0.02 |" in text


def test_missing_facts_are_not_recorded():
    text = model_card({"name": "bare", "unknown_key": 1})
    meta = front(text)
    assert meta["license"] == "other" and "base_model" not in meta and "model-index" not in meta
    assert f"- Base model: {NOT_RECORDED}" in text and f"- Agreement: {NOT_RECORDED}" in text
    assert text.count(NOT_RECORDED) >= 10


def test_hostile_text_cannot_break_the_yaml_or_the_markdown():
    text = model_card(ModelCardFacts(name=HOSTILE, kind="policy", method="dpo", base_model=HOSTILE,
                                     datasets=[HOSTILE], project=HOSTILE, metrics={HOSTILE: 1.0},
                                     training_config={"note": "```\n# heading"}))
    meta = front(text)
    assert meta["base_model"] == HOSTILE and meta["datasets"] == [HOSTILE] and meta["license"] == "other"
    assert meta["model-index"][0]["name"] == HOSTILE
    body = text.split("\n---\n", 1)[1]
    assert "<script>" not in body and "\n---\nlicense" not in body
    assert body.count("```") == 2  # the config block cannot be closed early


def test_run_statistics_stay_out_of_the_model_index_and_a_base_model_has_its_own_text():
    facts = ModelCardFacts(name="rm", kind="reward", project="demo", datasets=["pairwise-snapshot-3"],
                           metrics={"val_accuracy": 0.7}, evaluation_context={"val_groups": 30},
                           training_results={"seconds": 9.5, "comparisons_per_s": 40.0, "processes": 2})
    text = model_card(facts)
    [result] = front(text)["model-index"][0]["results"]
    assert [m["type"] for m in result["metrics"]] == ["val_accuracy"]
    assert result["dataset"] == {"name": "demo held-out prompts", "type": "pairwise-snapshot-3", "split": "held-out"}
    assert "### Training run" in text and "| processes | 2 |" in text and "| val\\_groups | 30 |" in text

    base = model_card(ModelCardFacts(name="smollm2", kind="policy", base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
                                     installed_base=True))
    assert front(base)["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and "model-index" not in front(base)
    assert "trained by Pairwise" not in base and "Pairwise did not train it" in base and "the first policy" in base


def test_other_data_rows_say_how_much_of_the_model_is_length():
    """A user reading the card sees whether the model only learned length: accuracy on the pairs where the
    chosen answer is shorter and where it is longer, and the margin's correlation with the length difference."""
    facts = ModelCardFacts(name="rm", kind="reward", other_evaluations={
        "blind": {"pairs": 120, "accuracy": 0.55, "ci95": [0.46, 0.64], "length_baseline": 0.43,
                  "length_margin_corr": 0.314, "accuracy_shorter_chosen": 0.4, "pairs_shorter_chosen": 68,
                  "accuracy_longer_chosen": 0.75, "pairs_longer_chosen": 52},
        "old": {"pairs": 10, "accuracy": 0.6, "length_baseline": 0.5}})  # recorded before these fields existed
    text = model_card(facts)
    assert "| blind | 120 | 55.0% | 46.0% to 64.0% | 43.0% | 40.0% / 75.0%, r = 0.31 |" in text
    assert f"| old | 10 | 60.0% | {NOT_RECORDED} | 50.0% | {NOT_RECORDED} |" in text
