"""Validation of the console's forms only; the services decide and write."""
from __future__ import annotations

from django import forms
from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator

from labeling.flags import custom_flags_problem
from labeling.models import Membership, Project
from labeling.selectors.console import BROWSE_VIEWS
from labeling.selectors.projects import tasks_short_of_responses_count
from labeling.services.annotators import EXCLUSION_REASON_MAX_CHARS
from labeling.services.projects import EDITABLE_FIELDS

PROJECT_FIELDS = ["name", "mode", "responses_per_task", "overlap", "gold_rate", "lease_seconds", "instructions",
                  "likert_enabled", "flags_enabled", "custom_flags", "retrain_min_judgments",
                  "training_min_gold_accuracy", "retrain_paused", "system_prompt", "gen_temperature", "gen_top_p",
                  "gen_max_new_tokens", "reward_promote_min_heldout_groups", "queue_order", "suggestions_enabled"]
assert set(PROJECT_FIELDS) <= EDITABLE_FIELDS
SCHEDULE_FIELDS = ("retrain_paused", "retrain_min_judgments")  # shown together, as the "Scheduled training" box


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
                  "gen_max_new_tokens": (1, 4096), "training_min_gold_accuracy": (0.0, 1.0),
                  "reward_promote_min_heldout_groups": (0, 100000)}
        for name, (low, high) in bounds.items():
            field = self.fields[name]
            field.min_value, field.max_value = low, high
            field.validators += [MinValueValidator(low), MaxValueValidator(high)]
            field.widget.attrs.update(min=low, max=high)
        self.fields["custom_flags"].required = False
        # Left out of a post (an older form, a script), the setting keeps its value rather than failing.
        self.fields["reward_promote_min_heldout_groups"].required = False
        self.fields["reward_promote_min_heldout_groups"].label = "Held-out groups needed to promote a reward model"
        self.fields["queue_order"].required = False
        self.fields["queue_order"].label = "Queue order"
        self.fields["suggestions_enabled"].label = "Show the reward model's pick after each submit"
        self.fields["retrain_paused"].label = "Pause scheduled training rounds"
        self.fields["retrain_paused"].help_text = (
            "The off switch: while ticked no round starts by itself (the schedule stays; the training tab still "
            "starts one by hand).")
        self.fields["retrain_min_judgments"].label = "Start a round after this many new judgments"
        self.fields["retrain_min_judgments"].help_text = (
            f"Checked every {settings.PAIRWISE_RETRAIN_CHECK_MINUTES} minutes. Counts new human judgments since the data "
            "of the last reward model (or of a cancelled round); imported judgments count only when their import asks.")

    def general_fields(self) -> list:
        return [field for field in self if field.name not in SCHEDULE_FIELDS]

    def schedule_fields(self) -> list:
        return [self[name] for name in SCHEDULE_FIELDS]

    def clean_queue_order(self):
        return self.cleaned_data.get("queue_order") or self.instance.queue_order

    def clean_reward_promote_min_heldout_groups(self):
        value = self.cleaned_data.get("reward_promote_min_heldout_groups")
        return self.instance.reward_promote_min_heldout_groups if value is None else value

    def clean_custom_flags(self):
        value = self.cleaned_data.get("custom_flags") or []
        problem = custom_flags_problem(value)
        if problem:
            raise forms.ValidationError(problem)
        return value

    def _post_clean(self):
        # The service runs the model's full_clean; here the fields' own checks are enough.
        pass


class ProjectSettingsForm(ProjectForm):
    """The settings form: raising K (or switching to ranking) while existing tasks show fewer
    responses is refused with a warning until the admin ticks the confirmation box."""

    CONFIRM = "confirm_k_change"

    def clean(self):
        cleaned = super().clean()
        mode, k = cleaned.get("mode"), cleaned.get("responses_per_task")
        if self.instance.pk is None or mode is None or k is None or not {"mode", "responses_per_task"} & set(self.changed_data):
            return cleaned
        new_k = 2 if mode == Project.Mode.PAIRWISE else k
        short = 0 if mode == Project.Mode.DEMONSTRATE else tasks_short_of_responses_count(project=self.instance, responses=new_k)
        if short and self.data.get(self.CONFIRM) not in ("on", "true", "1"):
            # The box appears only with the warning, so it never reaches the saved fields.
            self.fields[self.CONFIRM] = forms.BooleanField(
                required=False, label=f"Save K = {new_k} anyway",
                help_text="Existing tasks keep their responses; new tasks get the new K.")
            self.add_error(self.CONFIRM, f"{short} existing task{'s' if short != 1 else ''} show fewer than {new_k} "
                                         f"responses and will keep them: tick the box to save anyway.")
        return cleaned


class ProjectCreateForm(ProjectForm):
    class Meta(ProjectForm.Meta):
        fields = ["slug"] + PROJECT_FIELDS


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.ANNOTATOR)


class MemberRemoveForm(forms.Form):
    username = forms.CharField(max_length=150)


class AnnotatorForm(forms.Form):
    """Re-include or re-queue a member, named by user id: a deactivated account (which no username lookup
    finds) can still have its tasks re-queued."""
    user_id = forms.IntegerField(min_value=1)


class AnnotatorExcludeForm(AnnotatorForm):
    reason = forms.CharField(required=False, max_length=EXCLUSION_REASON_MAX_CHARS)


class BrowseForm(forms.Form):
    view = forms.ChoiceField(choices=[(v, v) for v in BROWSE_VIEWS], required=False)
    source = forms.CharField(required=False, max_length=255)
    annotator = forms.CharField(required=False, max_length=150)
    status = forms.CharField(required=False, max_length=16)
    since = forms.DateField(required=False)
    until = forms.DateField(required=False)
    before = forms.IntegerField(required=False, min_value=1)
