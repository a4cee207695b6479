"""The model registry and the runs that produce it.

A TrainingRun is the unit the Celery tasks move through QUEUED -> RUNNING -> a final status under
a row lock. A ModelVersion is only created once its artifact folder is complete and in place.
"""
from django.conf import settings
from django.db import models
from django.db.models import Q


class ModelVersion(models.Model):
    class Kind(models.TextChoices):
        REWARD = "reward", "Reward model"
        POLICY = "policy", "Policy"

    class Status(models.TextChoices):
        READY = "ready", "Ready"
        ARCHIVED = "archived", "Archived"

    project = models.ForeignKey(
        "labeling.Project", null=True, blank=True, on_delete=models.CASCADE, related_name="model_versions",
        help_text="Empty for base models shared by every project.",
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=200)
    base = models.CharField(max_length=1024, help_text="The base model folder or name.")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    artifact_path = models.CharField(max_length=1024)
    config = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    snapshot = models.ForeignKey(
        "labeling.DatasetSnapshot", null=True, blank=True, on_delete=models.SET_NULL, related_name="model_versions"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.READY)
    promoted = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "kind"], condition=Q(promoted=True), name="one_promoted_version_per_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


class TrainingRun(models.Model):
    class Kind(models.TextChoices):
        REWARD = "reward", "Reward model"
        SFT = "sft", "SFT"
        DPO = "dpo", "DPO"
        PPO = "ppo", "PPO"
        EVALUATE = "evaluate", "Evaluation"
        CANDIDATES = "candidates", "Candidate generation"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)

    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="training_runs")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    params = models.JSONField(default=dict, blank=True)
    base_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs_as_base"
    )
    result_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="produced_by"
    )
    snapshot = models.ForeignKey(
        "labeling.DatasetSnapshot", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    pipeline_id = models.UUIDField(null=True, blank=True, help_text="Runs chained by one scheduled round.")
    sent_at = models.DateTimeField(null=True, blank=True, help_text="When its task message was last sent.")
    sends = models.PositiveIntegerField(default=0, help_text="Task messages sent (more than one: a lost one was resent).")
    progress = models.FloatField(default=0.0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=255, blank=True)
    log_tail = models.TextField(blank=True)
    metrics_history = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # Single flight: one live run of each kind per project, enforced by the database.
            models.UniqueConstraint(
                fields=["project", "kind"], condition=Q(status__in=["queued", "running"]),
                name="single_flight_run_per_kind",
            ),
            models.CheckConstraint(condition=Q(progress__gte=0, progress__lte=1), name="run_progress_0_1"),
        ]
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="run_status_heartbeat_idx")]

    def __str__(self) -> str:
        return f"{self.kind} run {self.pk} ({self.status})"


class MachineAnnotator(models.Model):
    """A chat model (a registered endpoint version the project may use), or a reward model of the
    project, that judges the project's tasks through the same queue as people, as its own bot user
    (training.services.machine_annotators). Its judgments carry source "machine:<name>" and count in no
    human measure."""

    project = models.ForeignKey("labeling.Project", on_delete=models.CASCADE, related_name="machine_annotators")
    name = models.CharField(max_length=100)
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="machine_annotators",
                                help_text="The version that judges: an endpoint version the project may use, or a "
                                          "ready reward version of the project's own.")
    judge_prompt = models.TextField(help_text="The judge template (training.ml.judge): {instructions}, {prompt}, "
                                              "{response_a}, {response_b}.")
    takes_overlap_seats = models.BooleanField(
        default=False, help_text="Its judgments fill overlap seats like a person's (off: it judges beside the people, "
                                 "and never keeps a task from one).")
    enabled = models.BooleanField(default=True)
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="machine_annotator",
                                help_text="Its bot account: a project annotator that cannot log in.")
    last_error = models.TextField(blank=True)
    working_until = models.DateTimeField(
        null=True, blank=True, help_text="A batch of its work holds this claim until then (or until it ends), so two "
                                         "task messages never judge for it at once.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "name"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="machine_annotator_name_unique")]

    def __str__(self) -> str:
        return f"machine annotator {self.name} ({self.project_id})"


class Suggestion(models.Model):
    """The promoted reward model's pick for a task, shown to the annotator only after their judgment
    was stored (training.services.suggestions), and kept: the stored suggestions are the judgments
    made while that version was deployed, so they measure its online accuracy
    (training.selectors.suggestions). The human's ranking is the one submitted before the pick was
    shown; a later correction (made after seeing it) does not change it."""

    judgment = models.OneToOneField("labeling.Judgment", on_delete=models.CASCADE, related_name="suggestion")
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="suggestions",
                                help_text="The reward version promoted when the pick was made.")
    scores = models.JSONField(help_text="[[response id, reward], ...] in the task's slot order.")
    pick = models.BigIntegerField(help_text="The response id the model scores highest.")
    probability = models.FloatField(help_text="P(pick is best) = softmax of the rewards: with two responses, "
                                              "sigmoid(r_pick - r_other), the Bradley-Terry probability.")
    human_ranking = models.JSONField(help_text="The annotator's ranking (response ids, tie groups best first) as submitted.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"suggestion for judgment {self.judgment_id} by version {self.version_id}"
