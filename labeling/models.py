"""The InstructGPT labeling scheme: projects, prompts, candidate responses, comparison tasks,
leased assignments, immutable judgments and the pairwise preferences derived from them.

Models hold data and constraints only; every write goes through labeling.services.
"""
from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from .flags import INSTRUCTGPT_FLAGS

USER = settings.AUTH_USER_MODEL


class Project(models.Model):
    class Mode(models.TextChoices):
        PAIRWISE = "pairwise", "Pairwise (A/B, tie, both bad)"
        RANK = "rank", "K-way ranking with ties"
        DEMONSTRATE = "demonstrate", "Write the ideal response"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    instructions = models.TextField(blank=True, help_text="Markdown shown to annotators.")
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.RANK)
    responses_per_task = models.PositiveSmallIntegerField(default=4, help_text="K, from 2 to 9.")
    overlap = models.PositiveSmallIntegerField(default=1, help_text="Distinct annotators per task.")
    likert_enabled = models.BooleanField(default=True)
    flags_enabled = models.BooleanField(default=True)
    custom_flags = models.JSONField(default=list, blank=True, help_text='Extra flags: [["key", "Label"], ...].')
    lease_seconds = models.PositiveIntegerField(default=900)
    gold_rate = models.FloatField(default=0.0, help_text="Share of served tasks that are gold, 0..1.")
    system_prompt = models.TextField(blank=True, help_text="System message for candidate generation.")
    gen_temperature = models.FloatField(default=1.0)
    gen_top_p = models.FloatField(default=0.95)
    gen_max_new_tokens = models.PositiveIntegerField(default=128)
    retrain_min_judgments = models.PositiveIntegerField(
        default=100, help_text="Scheduled retraining starts once this many new judgments exist."
    )
    training_min_gold_accuracy = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Leave the judgments and demonstrations of annotators whose gold accuracy is below this out of "
                  "training data (empty keeps everyone; annotators with no gold answers yet are kept).",
    )
    retrain_paused = models.BooleanField(
        default=False, db_default=False, help_text="Pause scheduled training rounds (the schedule stays; a round can still be started by hand).",
    )
    reward_promote_min_heldout_groups = models.PositiveIntegerField(
        default=20, db_default=20,
        help_text="A trained reward model is promoted by its run only when at least this many held-out groups "
                  "measured it and its accuracy on them beats \"the longer answer wins\"; otherwise it stays a candidate.",
    )
    class QueueOrder(models.TextChoices):
        STARTED_FIRST = "started-first", "Started tasks first, then oldest (fills overlap fastest)"
        UNCERTAINTY = "uncertainty", "Where the promoted reward model is least sure"
        DISAGREEMENT = "disagreement", "Where a small ensemble of reward heads disagrees most"

    queue_order = models.CharField(
        max_length=16, choices=QueueOrder.choices, default=QueueOrder.STARTED_FIRST, db_default=QueueOrder.STARTED_FIRST,
        help_text="Which open task an annotator gets next; the acquisition orders use each task's score, "
                  "recomputed after every reward round.",
    )
    suggestions_enabled = models.BooleanField(
        default=False, db_default=False,
        help_text="After an annotator submits (never before), show the promoted reward model's pick and its probability.",
    )
    created_by = models.ForeignKey(USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    deleted_at = models.DateTimeField(null=True, blank=True, help_text="Soft delete; admins can restore.")

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(responses_per_task__gte=2, responses_per_task__lte=9), name="project_k_2_to_9"
            ),
            models.CheckConstraint(condition=Q(overlap__gte=1), name="project_overlap_positive"),
            models.CheckConstraint(condition=Q(gold_rate__gte=0, gold_rate__lte=1), name="project_gold_rate_0_1"),
            models.CheckConstraint(condition=Q(lease_seconds__gte=10), name="project_lease_min_10s"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def flag_choices(self) -> list[tuple[str, str]]:
        return list(INSTRUCTGPT_FLAGS) + [tuple(flag) for flag in self.custom_flags]


class Membership(models.Model):
    class Role(models.TextChoices):
        ADMIN = "admin", "Admin"
        ANNOTATOR = "annotator", "Annotator"
        VIEWER = "viewer", "Viewer"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(USER, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ANNOTATOR)
    created_at = models.DateTimeField(auto_now_add=True)
    excluded_at = models.DateTimeField(
        null=True, blank=True,
        help_text="Set while an admin excludes this member (labeling.services.annotators): no new tasks, and left "
                  "out of the label models; their judgments stay stored.",
    )
    excluded_by = models.ForeignKey(USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # db_default: rows written by code that predates the column (a rolling deploy) still insert.
    exclusion_reason = models.TextField(blank=True, default="", db_default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} ({self.role})"


class Prompt(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="prompts")
    external_id = models.CharField(max_length=255, help_text="Unique per project; a content hash when not given.")
    text = models.TextField(blank=True)
    messages = models.JSONField(null=True, blank=True, help_text='Chat form: [{"role": ..., "content": ...}].')
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "external_id"], name="prompt_external_id_unique")]

    def __str__(self) -> str:
        return self.external_id


class Response(models.Model):
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="responses")
    text = models.TextField()
    source = models.CharField(max_length=255, help_text="A model version name or an external model name.")
    model_version = models.ForeignKey(
        "training.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="responses"
    )
    generation = models.JSONField(default=dict, blank=True, help_text="Generation parameters.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["source"], name="response_source_idx")]

    def __str__(self) -> str:
        return f"{self.source}: {self.text[:40]}"


class ComparisonTask(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        COMPLETE = "complete", "Complete"
        ARCHIVED = "archived", "Archived"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="tasks")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="tasks")
    responses = models.ManyToManyField(Response, through="TaskResponse", related_name="tasks")
    is_gold = models.BooleanField(default=False)
    gold_ranking = models.JSONField(null=True, blank=True, help_text="Expected ranking as tie groups of response ids.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    judgments_count = models.PositiveIntegerField(default=0)
    active_assignments = models.PositiveIntegerField(default=0)
    acquisition_score = models.FloatField(
        null=True, blank=True, help_text="How much a label here is worth by the project's queue order (higher first); "
                                         "null until a reward round scores it.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=~Q(is_gold=True) | Q(gold_ranking__isnull=False), name="task_gold_has_answer"
            ),
        ]
        indexes = [
            # The queue: open tasks of a project, started ones first, then oldest. Tasks whose
            # seats are leased right now sort after free ones, so the pick does not wade through
            # every annotator's held (and prefetched) tasks before it finds a free seat.
            models.Index(
                "project",
                "is_gold",
                models.F("judgments_count").desc(),
                "active_assignments",
                "id",
                condition=Q(status="open"),
                name="task_queue_free_first_idx",
            ),
            # The acquisition orders' queue (queue_order uncertainty/disagreement): the same order with
            # the score before id. Partial on scored tasks, so it stays empty, and costs the started-first
            # queue's seat updates nothing, in projects that do not order by score.
            models.Index(
                "project",
                "is_gold",
                models.F("judgments_count").desc(),
                "active_assignments",
                models.F("acquisition_score").desc(),
                "id",
                condition=Q(status="open", acquisition_score__isnull=False),
                name="task_queue_scored_idx",
            ),
            # The console's data browser: a project's tasks of one status, newest first, by keyset
            # (without it, "open tasks" sorted 100k rows of the queue index per page at 1M tasks).
            models.Index(fields=["project", "status", "id"], name="task_project_status_idx"),
        ]

    def __str__(self) -> str:
        return f"task {self.pk} ({self.project_id})"


class TaskResponse(models.Model):
    task = models.ForeignKey(ComparisonTask, on_delete=models.CASCADE, related_name="slots")
    response = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="slots")
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["task", "position"]
        constraints = [
            models.UniqueConstraint(fields=["task", "position"], name="taskresponse_position_unique"),
            models.UniqueConstraint(fields=["task", "response"], name="taskresponse_response_unique"),
        ]


class Assignment(models.Model):
    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        SUBMITTED = "submitted", "Submitted"
        SKIPPED = "skipped", "Skipped"
        EXPIRED = "expired", "Expired"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="assignments")
    task = models.ForeignKey(ComparisonTask, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(USER, on_delete=models.CASCADE, related_name="assignments")
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    shown_order = models.JSONField(default=list, help_text="Response ids in the order this annotator saw them.")
    leased_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    holds_seat = models.BooleanField(
        default=True, db_default=True,
        help_text="Takes one of its task's overlap seats (counted in active_assignments, then judgments_count). A "
                  "machine annotator that takes no seats leases without one, so it never keeps a task from a person.",
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["task", "annotator"], name="assignment_task_annotator_unique")]
        indexes = [
            models.Index(fields=["annotator", "project", "state"], name="assignment_annotator_idx"),
            models.Index(fields=["expires_at"], condition=Q(state="active"), name="assignment_active_expiry_idx"),
        ]


# A machine annotator's judgments carry source "machine:<its name>"; every human-only read keeps
# source == "human", so they never count as a person's.
MACHINE_SOURCE_PREFIX = "machine:"


class Judgment(models.Model):
    """One annotator's verdict on one task. Immutable: a correction is a new row that supersedes it."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="judgments")
    task = models.ForeignKey(ComparisonTask, on_delete=models.CASCADE, related_name="judgments")
    assignment = models.OneToOneField(
        Assignment, null=True, blank=True, on_delete=models.SET_NULL, related_name="judgment"
    )
    annotator = models.ForeignKey(USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="judgments")
    source = models.CharField(
        max_length=255, default="human",
        help_text='"human", an imported dataset name, or "machine:<name>" for a machine annotator (MACHINE_SOURCE_PREFIX).')
    counts_for_retrain = models.BooleanField(
        default=True, db_default=True,
        help_text="Counts toward the project's retrain_min_judgments: human judgments do, imported ones only when "
                  "their import asked (an import never starts a scheduled round by itself).",
    )
    counts_for_overlap = models.BooleanField(
        default=True, db_default=True,
        help_text="Holds one of its task's overlap seats (counted in judgments_count). A re-queue of the annotator's "
                  "tasks sets it false on their judgments of each task, corrections included; the judgment stays.",
    )
    ranking = models.JSONField(help_text="Tie groups of response ids, best first: [[3], [1, 4], [2]].")
    both_bad = models.BooleanField(default=False)
    likert = models.JSONField(default=dict, blank=True, help_text="{response_id: 1..7}")
    flags = models.JSONField(default=dict, blank=True, help_text="{response_id: [flag keys]}")
    rationale = models.TextField(blank=True)
    machine = models.JSONField(
        null=True, blank=True,
        help_text='A machine annotator\'s judgment: {"consistent": both orders of every pair agreed, "pairs": '
                  '[{first, second, replies, outcome, status}]}; null for a person\'s.')
    shown_order = models.JSONField(default=list, blank=True)
    time_spent_ms = models.PositiveIntegerField(default=0)
    idempotency_key = models.CharField(max_length=128, unique=True)
    supersedes = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="superseded_by"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["project", "created_at"], name="judgment_project_time_idx"),
            models.Index(fields=["annotator", "project"], name="judgment_annotator_idx"),
        ]


class PreferencePair(models.Model):
    """chosen > rejected, expanded from a judgment in the same transaction. Ties give no pair."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="pairs")
    judgment = models.ForeignKey(Judgment, on_delete=models.CASCADE, related_name="pairs")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="pairs")
    chosen = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    rejected = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=~Q(chosen=models.F("rejected")), name="pair_distinct_responses"),
            models.UniqueConstraint(fields=["judgment", "chosen", "rejected"], name="pair_unique_per_judgment"),
        ]
        indexes = [models.Index(fields=["project", "id"], name="pair_project_idx")]


class Demonstration(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="demonstrations")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="demonstrations")
    author = models.ForeignKey(USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="demonstrations")
    assignment = models.OneToOneField(
        Assignment, null=True, blank=True, on_delete=models.SET_NULL, related_name="demonstration"
    )
    text = models.TextField()
    idempotency_key = models.CharField(max_length=128, unique=True, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)


class DatasetSnapshot(models.Model):
    """A frozen export: the file plus its manifest. Training runs record the snapshot they used."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="snapshots")
    format = models.CharField(max_length=32)
    filters = models.JSONField(default=dict, blank=True)
    path = models.CharField(max_length=1024)
    rows = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64)
    created_by = models.ForeignKey(USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)


class BackgroundJob(models.Model):
    """A job a worker runs for a web request (an export, a large import): its status and its liveness,
    as for training runs. The worker beats while it works; the reaper (config.jobs, through each
    kind's service) fails a silent one and resends a lost message."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    sends = models.PositiveIntegerField(default=0)

    class Meta:
        abstract = True


class ExportJob(BackgroundJob):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="export_jobs")
    format = models.CharField(max_length=32)
    filters = models.JSONField(default=dict, blank=True)
    rows = models.PositiveBigIntegerField(default=0)
    path = models.CharField(max_length=1024, blank=True)
    snapshot = models.ForeignKey(DatasetSnapshot, null=True, blank=True, on_delete=models.SET_NULL)


class ImportJob(BackgroundJob):
    """An upload over PAIRWISE_IMPORT_BACKGROUND_BYTES, imported by the worker from its saved copy
    (labeling.services.import_jobs)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="import_jobs")
    filename = models.CharField(max_length=255)
    path = models.CharField(max_length=1024, help_text="The saved upload; removed once the job ends.")
    size = models.PositiveBigIntegerField(default=0)
    options = models.JSONField(default=dict, blank=True, help_text="format, source, preferences, skip_invalid, count_for_retrain")
    rows_done = models.PositiveBigIntegerField(default=0)
    result = models.JSONField(default=dict, blank=True, help_text="What the synchronous import answers, once it succeeded.")
    errors = models.JSONField(default=list, blank=True, help_text="[{line, field, message}] of a failed import.")


class ImportBatch(models.Model):
    """A record of one import: what came in and how many rows were created or skipped."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="imports")
    filename = models.CharField(max_length=255)
    kind = models.CharField(max_length=32)
    created = models.JSONField(default=dict)
    skipped_duplicates = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(USER, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)


class LabelModelFit(models.Model):
    """A project's latest label-model fit (labeling.services.label_models): per model, each annotator's
    estimated accuracy, position bias and flags, and each response pair's posterior. One row per
    project, replaced by every refit; the judgments it read stay as they are."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="label_model_fit")
    judgments = models.PositiveIntegerField(default=0, help_text="Current human judgments the fit read.")
    votes = models.PositiveIntegerField(default=0, help_text="Response-pair votes those judgments gave.")
    fits = models.JSONField(default=dict, help_text='{model: {"seconds", "annotators": {user id: stats}}}')
    posteriors = models.JSONField(default=dict, help_text='{"a-b": {model: P(a beats b)}}, a < b response ids.')
    created_at = models.DateTimeField(auto_now=True)
