"""training.management.cli: what the training commands parse the same way, refused with a CommandError."""
from __future__ import annotations

import pytest
from django.core.management.base import CommandError

from training.management.cli import json_object, project_from_slug


@pytest.mark.django_db
def test_a_project_is_found_by_its_slug_and_an_unknown_one_is_named(project_factory):
    project = project_factory()
    assert project_from_slug(project.slug) == project
    with pytest.raises(CommandError, match="no project with slug 'nope'"):
        project_from_slug("nope")


def test_a_json_option_is_an_object_or_refused_naming_the_option():
    assert json_object("", "--config") == {} and json_object('{"lora_r": 8}', "--config") == {"lora_r": 8}
    with pytest.raises(CommandError, match="--config is not JSON"):
        json_object("{", "--config")
    with pytest.raises(CommandError, match="--filters must be a JSON object"):
        json_object("[1]", "--filters")
