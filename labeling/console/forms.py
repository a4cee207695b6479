"""Validation of the console's forms only; the services decide and write."""
from __future__ import annotations

from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator

from labeling.flags import custom_flags_problem
from labeling.models import Membership, Project
from labeling.selectors.console import BROWSE_VIEWS
from labeling.services.projects import EDITABLE_FIELDS

PROJECT_FIELDS = ["name", "mode", "responses_per_task", "overlap", "gold_rate", "lease_seconds", "instructions",
                  "likert_enabled", "flags_enabled", "custom_flags", "retrain_min_judgments",
                  "training_min_gold_accuracy", "retrain_paused", "system_prompt", "gen_temperature", "gen_top_p",
                  "gen_max_new_tokens"]
assert set(PROJECT_FIELDS) <= EDITABLE_FIELDS


class ProjectForm(forms.ModelForm):
    """The settings form; the create form adds the slug. Bounds as the API's serializer has them."""

    class Meta:
        model = Project
        fields = PROJECT_FIELDS
        widgets = {"instructions": forms.Textarea(attrs={"rows": 8, "data-markdown-preview": "1"}),
                   "system_prompt": forms.Textarea(attrs={"rows": 2}),
                   "custom_flags": forms.Textarea(attrs={"rows": 2, "placeholder": '[["off_topic", "Off topic"]]'})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        bounds = {"responses_per_task": (2, 9), "overlap": (1, 100), "gold_rate": (0.0, 1.0),
                  "lease_seconds": (10, 7 * 24 * 3600), "gen_temperature": (0.0, 5.0), "gen_top_p": (0.0, 1.0),
                  "gen_max_new_tokens": (1, 4096), "training_min_gold_accuracy": (0.0, 1.0)}
        for name, (low, high) in bounds.items():
            field = self.fields[name]
            field.min_value, field.max_value = low, high
            field.validators += [MinValueValidator(low), MaxValueValidator(high)]
            field.widget.attrs.update(min=low, max=high)
        self.fields["custom_flags"].required = False

    def clean_custom_flags(self):
        value = self.cleaned_data.get("custom_flags") or []
        problem = custom_flags_problem(value)
        if problem:
            raise forms.ValidationError(problem)
        return value

    def _post_clean(self):
        # The service runs the model's full_clean; here the fields' own checks are enough.
        pass


class ProjectCreateForm(ProjectForm):
    class Meta(ProjectForm.Meta):
        fields = ["slug"] + PROJECT_FIELDS


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.ANNOTATOR)


class MemberRemoveForm(forms.Form):
    username = forms.CharField(max_length=150)


class BrowseForm(forms.Form):
    view = forms.ChoiceField(choices=[(v, v) for v in BROWSE_VIEWS], required=False)
    source = forms.CharField(required=False, max_length=255)
    annotator = forms.CharField(required=False, max_length=150)
    status = forms.CharField(required=False, max_length=16)
    since = forms.DateField(required=False)
    until = forms.DateField(required=False)
    before = forms.IntegerField(required=False, min_value=1)
