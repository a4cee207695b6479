"""Validation of the training console's forms only: the machine annotators' page. The services decide
(training.services.machine_annotators checks the name, the version and the template), so the fields that
the service checks are not required here: a blank one reaches the service, whose message is shown on it."""
from __future__ import annotations

from django import forms

from training.ml.judge import PLACEHOLDERS

PROMPT_HELP = (
    "Placeholders: {instructions} (the project's annotator instructions), {prompt} (the task's prompt), "
    "{response_a} and {response_b} (the two answers, each pair asked in both orders). {prompt}, {response_a} "
    "and {response_b} are required; write a literal brace twice: {{ or }}."
)
assert all("{" + p + "}" in PROMPT_HELP for p in PLACEHOLDERS)  # the help names every placeholder the judge knows
SEATS_HELP = ("On: each of its judgments fills one of the task's overlap seats like a person's, so one person fewer "
              "judges each task it judged. Off: it judges beside the people and never keeps a task from one.")


def _prompt_field() -> forms.CharField:
    # strip=False: the template is sent as written (its whitespace is part of what the judge reads).
    return forms.CharField(label="Judge prompt", required=False, strip=False, help_text=PROMPT_HELP,
                           widget=forms.Textarea(attrs={"rows": 14, "cols": 90, "spellcheck": "false"}))


def _seats_field() -> forms.BooleanField:
    return forms.BooleanField(label="Takes overlap seats", required=False, help_text=SEATS_HELP)


class _JudgePromptMixin:
    def clean_judge_prompt(self) -> str:
        # Browsers send a textarea's line breaks as CRLF (the HTML form encoding); the default templates and
        # the API's are LF, and an unedited prompt must compare equal to the stored one.
        return self.cleaned_data["judge_prompt"].replace("\r\n", "\n")


class MachineAnnotatorCreateForm(_JudgePromptMixin, forms.Form):
    """Add a machine annotator. The version select offers the versions the service accepts (the view
    passes them); the id is checked by the service, so a hand-posted other one gets its answer."""

    name = forms.CharField(required=False, help_text="Lower-case letters, digits, '.', '_' or '-': "
                           "its judgments' source becomes machine:<name>, so it cannot be changed later.",
                           widget=forms.TextInput(attrs={"autocomplete": "off", "required": True}))
    version = forms.IntegerField(required=False, widget=forms.Select, help_text=(
        "A model server registered on the training page judges with the prompt below; a reward model of this "
        "project ranks the responses by its rewards (it keeps the prompt but does not use it)."))
    judge_prompt = _prompt_field()
    takes_overlap_seats = _seats_field()

    def __init__(self, *args, versions=(), **kwargs):
        """versions: [(group label, [ModelVersion])], shown as the select's option groups."""
        super().__init__(*args, **kwargs)
        self.fields["version"].widget.choices = [(label, [(v.pk, f"{v.pk} · {v.name}") for v in group])
                                                 for label, group in versions]


class MachineAnnotatorUpdateForm(_JudgePromptMixin, forms.Form):
    """Change a machine annotator (its name and version stay: the name is its judgments' source)."""

    enabled = forms.BooleanField(required=False, help_text="Off: it takes no more tasks and its leases go back.")
    judge_prompt = _prompt_field()
    takes_overlap_seats = _seats_field()
