"""Input validation and output shapes only; no business logic."""
from rest_framework import serializers

from labeling.flags import custom_flags_problem

from labeling.models import (
    ComparisonTask, Demonstration, ImportBatch, Judgment, Membership, PreferencePair, Project, Prompt, Response,
)
from labeling.services.annotators import EXCLUSION_REASON_MAX_CHARS


class ProjectOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Project
        fields = [
            "id", "name", "slug", "instructions", "mode", "responses_per_task", "overlap", "likert_enabled",
            "flags_enabled", "custom_flags", "lease_seconds", "gold_rate", "system_prompt", "gen_temperature",
            "gen_top_p", "gen_max_new_tokens", "retrain_min_judgments", "training_min_gold_accuracy", "retrain_paused",
            "reward_promote_min_heldout_groups", "queue_order", "suggestions_enabled", "created_at",
        ]
        read_only_fields = fields


class ProjectInputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Project
        fields = [
            "name", "slug", "instructions", "mode", "responses_per_task", "overlap", "likert_enabled",
            "flags_enabled", "custom_flags", "lease_seconds", "gold_rate", "system_prompt", "gen_temperature",
            "gen_top_p", "gen_max_new_tokens", "retrain_min_judgments", "training_min_gold_accuracy", "retrain_paused",
            "reward_promote_min_heldout_groups", "queue_order", "suggestions_enabled",
        ]
        # The database enforces these too; repeating them here turns a violation into a field error.
        extra_kwargs = {
            "responses_per_task": {"min_value": 2, "max_value": 9},
            "overlap": {"min_value": 1, "max_value": 100},
            "gold_rate": {"min_value": 0.0, "max_value": 1.0},
            "lease_seconds": {"min_value": 10, "max_value": 7 * 24 * 3600},
            "gen_temperature": {"min_value": 0.0, "max_value": 5.0},
            "gen_top_p": {"min_value": 0.0, "max_value": 1.0},
            "gen_max_new_tokens": {"min_value": 1, "max_value": 4096},
            "reward_promote_min_heldout_groups": {"min_value": 0, "max_value": 100000},
        }

    def validate_custom_flags(self, value):
        problem = custom_flags_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value


class MembershipSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")

    class Meta:
        model = Membership
        fields = ["username", "role", "created_at"]
        read_only_fields = ["created_at"]


class AnnotatorExcludeInputSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=EXCLUSION_REASON_MAX_CHARS,
                                   help_text="Why, shown on the annotators tab.")


class AnnotatorExclusionSerializer(serializers.ModelSerializer):
    """A member's exclusion state (labeling.services.annotators)."""
    username = serializers.CharField(source="user.username", read_only=True)
    excluded = serializers.SerializerMethodField()
    excluded_by = serializers.CharField(source="excluded_by.username", read_only=True, allow_null=True,
                                        help_text="The admin who excluded them (null when not excluded).")

    class Meta:
        model = Membership
        fields = ["user_id", "username", "role", "excluded", "excluded_at", "excluded_by", "exclusion_reason"]
        read_only_fields = fields

    def get_excluded(self, membership: Membership) -> bool:
        return membership.excluded_at is not None


class AnnotatorTasksRequeueOutputSerializer(serializers.Serializer):
    reopened = serializers.IntegerField(help_text="Complete tasks that reopened because this member's seat went back to the queue.")


class PromptSerializer(serializers.ModelSerializer):
    class Meta:
        model = Prompt
        fields = ["id", "external_id", "text", "messages", "metadata", "created_at"]


class ResponseSerializer(serializers.ModelSerializer):
    class Meta:
        model = Response
        fields = ["id", "prompt", "text", "source", "model_version", "generation", "created_at"]


class TaskSerializer(serializers.ModelSerializer):
    response_ids = serializers.SerializerMethodField()

    class Meta:
        model = ComparisonTask
        fields = ["id", "prompt", "response_ids", "is_gold", "status", "judgments_count", "created_at"]

    def get_response_ids(self, task) -> list[int]:
        return [slot.response_id for slot in task.slots.all()]


class PairSerializer(serializers.ModelSerializer):
    class Meta:
        model = PreferencePair
        fields = ["chosen", "rejected"]


class JudgmentSerializer(serializers.ModelSerializer):
    pairs = PairSerializer(many=True, read_only=True)

    class Meta:
        model = Judgment
        fields = [
            "id", "task", "annotator", "source", "ranking", "both_bad", "likert", "flags", "rationale",
            "shown_order", "time_spent_ms", "supersedes", "created_at", "pairs",
        ]


class DemonstrationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Demonstration
        fields = ["id", "prompt", "author", "text", "created_at"]
        read_only_fields = ["id", "author", "created_at"]


class DemonstrationInputSerializer(serializers.Serializer):
    prompt = serializers.IntegerField()
    text = serializers.CharField(max_length=1_000_000)
    idempotency_key = serializers.CharField(max_length=128, required=False)


class ImportInputSerializer(serializers.Serializer):
    file = serializers.FileField()
    source = serializers.CharField(max_length=255, required=False, default="")


class ImportBatchSerializer(serializers.ModelSerializer):
    class Meta:
        model = ImportBatch
        fields = ["id", "filename", "kind", "created", "skipped_duplicates", "created_at"]


class ImportResultSerializer(serializers.Serializer):
    prompts = serializers.IntegerField()
    responses = serializers.IntegerField()
    tasks = serializers.IntegerField()
    judgments = serializers.IntegerField()
    pairs = serializers.IntegerField()
    demonstrations = serializers.IntegerField()
    skipped_duplicates = serializers.IntegerField()
    batch_id = serializers.IntegerField(allow_null=True, help_text="None for a dry run.")
