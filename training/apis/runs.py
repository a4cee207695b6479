"""REST API for training runs and the model registry, under /api/training/.

Reads are for viewers and admins (runs' params, logs and errors, versions' folders and endpoint URLs
are not for annotators); starting, cancelling, promoting and demoting need the admin role.
"""
from __future__ import annotations

from django.conf import settings
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response as HttpResponse
from rest_framework.views import APIView

from labeling.apis.base import ADMIN_ROLES, BoundedJSONParser, DeclaredSizeMixin, ProjectScopedMixin
from labeling.selectors.projects import OVERSIGHT_ROLES
from training import plan
from training.ml.netguard import url_problem
from training.ml.preference_file import parse_preference_upload
from training.models import ModelVersion, TrainingRun
from training.selectors.runs import run_list
from training.selectors.suggestions import suggestion_accuracy
from training.selectors.versions import model_card_text, model_version_list
from training.services.endpoints import endpoint_version_register
from training.services.reward import SYNC_EVALUATION_MAX_RECORDS, reward_model_evaluate
from training.services.runs import RunAlreadyActive, run_cancel, run_request
from training.services.versions import model_version_demote, model_version_merge, model_version_promote


class RunOutputSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = TrainingRun
        fields = [
            "id", "project", "kind", "status", "progress", "params", "base_version", "result_version", "pipeline_id",
            "heartbeat_at", "started_at", "finished_at", "created_at", "worker", "error", "log_tail", "metrics_history",
        ]


class RunInputSerializer(serializers.Serializer):
    """The run request, for the schema: RunListApi.post parses it with training.runspec, which also
    refuses unknown keys, other kinds' keys and operator-only ones (device, threads, output_dir,
    accelerate_config, backend)."""

    # A CharField, not a ChoiceField: the same enum as RunOutputSerializer.kind on two components makes
    # drf-spectacular's enum naming collide with ModelVersion's "kind".
    kind = serializers.CharField(default=TrainingRun.Kind.REWARD,
                                 help_text=f"One of {', '.join(TrainingRun.Kind.values)}.")
    base = serializers.CharField(required=False, help_text="Reward runs: the backbone, a shared base model's version id or "
                                                           "installed name (manage.py install_base_models).")
    config = serializers.DictField(required=False, help_text="Trainer config overrides (RewardConfig, SFTConfig, DPOConfig, "
                                                             "PPOConfig), e.g. {\"epochs\": 2}.")
    promote = serializers.ChoiceField(choices=list(plan.PROMOTE_CHOICES), required=False,
                                      help_text="Promote the new version: reward runs default to always, policy runs to never.")
    version = serializers.IntegerField(required=False, help_text="Policy runs: the parent version (default: the promoted "
                                                                  "policy). Evaluation runs: the version to evaluate (required).")
    include_chosen = serializers.BooleanField(default=False, help_text="SFT: also train on each judgment's best response.")
    snapshot = serializers.IntegerField(required=False, min_value=1, help_text="Training runs: train from this frozen "
                                        "training snapshot (default: one frozen from the live data at the run's start).")
    include_gold = serializers.BooleanField(default=False, help_text="Training runs: also train on gold judgments.")
    mix_snapshots = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, max_length=plan.MAX_MIXED_SNAPSHOTS,
        help_text="Reward runs: also train on these frozen training snapshots of other projects you oversee (their "
                  "training side), e.g. public preference sets imported as projects.")
    processes = serializers.IntegerField(required=False, min_value=1, max_value=plan.MAX_PROCESSES,
                                         help_text="SFT, DPO and reward runs: train on this many processes (torchrun on the "
                                                   "CPU, accelerate launch on GPUs; default PAIRWISE_TRAIN_PROCESSES, at "
                                                   "most PAIRWISE_MAX_PROCESSES).")
    min_gold_accuracy = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1,
                                               help_text="Training runs: leave out annotators whose gold accuracy is "
                                                         "below this (default: the project's setting).")
    filters = serializers.DictField(required=False, help_text="Training runs: export filters for the snapshot made at "
                                                              "the start, e.g. {\"date_from\": \"2026-01-01\", \"annotator\": \"ann\"}.")
    auto_promote_margin = serializers.FloatField(required=False, allow_null=True, min_value=-1, max_value=1,
                                                 help_text="Evaluation: promote when the version beats its parent by this.")
    promote_metric = serializers.ChoiceField(choices=list(plan.PROMOTE_METRICS), default=plan.DEFAULT_PROMOTE_METRIC)
    promote_requires_preference_gain = serializers.BooleanField(
        required=False, help_text="Evaluation with auto_promote_margin: also require the 95% interval of the version's "
                                  "per-token preference-accuracy gain over its parent on held-out human pairs not below zero.")
    max_pairs = serializers.IntegerField(required=False, min_value=1, max_value=100000,
                                         help_text="Evaluation: how many held-out human pairs measure preference accuracy.")
    max_prompts = serializers.IntegerField(required=False, min_value=1, max_value=100000,
                                           help_text="Candidates and evaluation: how many prompts.")
    max_demonstrations = serializers.IntegerField(required=False, min_value=1, max_value=100000,
                                                  help_text="Evaluation: how many held-out demonstrations.")
    max_new_tokens = serializers.IntegerField(required=False, min_value=1, max_value=4096,
                                              help_text="Evaluation: the longest sampled response.")
    batch_size = serializers.IntegerField(required=False, min_value=1, max_value=1024,
                                          help_text="Candidates and evaluation: prompts per batch.")
    precision = serializers.ChoiceField(choices=["auto", "bf16", "fp32"], required=False, help_text="Evaluation.")

    def validate_kind(self, value: str) -> str:
        if value not in TrainingRun.Kind.values:
            raise serializers.ValidationError(f"One of {', '.join(TrainingRun.Kind.values)}.")
        return value


class VersionOutputSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    metrics = serializers.SerializerMethodField()
    online = serializers.SerializerMethodField(help_text=(
        "A reward version's online accuracy on the judgments made while it was promoted (its suggestions): "
        "{suggestions, pairs, agreement, ci95, ece, ece_bins}; null without suggestions or outside the list."))

    class Meta:
        model = ModelVersion
        fields = ["id", "project", "kind", "name", "base", "parent", "artifact_path", "config", "metrics", "snapshot",
                  "status", "promoted", "created_at", "online"]

    def get_metrics(self, version) -> dict:
        return {k: v for k, v in (version.metrics or {}).items() if k != "history"}

    def get_online(self, version) -> dict | None:
        return (self.context.get("online") or {}).get(version.pk)


EVAL_RESULT = inline_serializer("RewardEvaluation", fields={
    "pairs": serializers.IntegerField(), "accuracy": serializers.FloatField(allow_null=True),
    "mean_margin": serializers.FloatField(allow_null=True), "log_loss": serializers.FloatField(allow_null=True),
    "length_baseline": serializers.FloatField(allow_null=True, help_text="Accuracy of 'the longer answer wins' (ties half)."),
    "by_length": serializers.ListField(child=serializers.DictField(), help_text=(
        "{bucket, pairs, accuracy, length_baseline} by how much longer the chosen answer is, in characters.")),
    "length_margin_corr": serializers.FloatField(allow_null=True, help_text=(
        "Pearson correlation of the margin r(chosen) - r(rejected) with the length difference chosen - rejected, "
        "in characters; near 1: the model mostly scores length (null: fewer than 2 pairs or a constant side).")),
    "accuracy_shorter_chosen": serializers.FloatField(allow_null=True, help_text="Accuracy on the pairs whose chosen answer is shorter."),
    "pairs_shorter_chosen": serializers.IntegerField(),
    "accuracy_longer_chosen": serializers.FloatField(allow_null=True, help_text="Accuracy on the pairs whose chosen answer is longer."),
    "pairs_longer_chosen": serializers.IntegerField(),
    "ci95": serializers.ListField(child=serializers.FloatField(), allow_null=True, help_text="Bootstrap 95% interval of the accuracy."),
    "trained_prompts": serializers.IntegerField(allow_null=True, help_text=(
        "How many of these prompts the version trained on (null: its data snapshot is gone).")),
})


class RunListApi(ProjectScopedMixin, generics.ListAPIView):
    read_roles = OVERSIGHT_ROLES  # runs carry params, logs and errors
    serializer_class = RunOutputSerializer

    def get_queryset(self):
        return run_list(project=self.project, kind=self.request.query_params.get("kind"),
                        status=self.request.query_params.get("status"))

    @extend_schema(request=RunInputSerializer, responses={201: RunOutputSerializer, 409: RunOutputSerializer})
    def post(self, request, slug):
        """Train now. 409 with the live run when one of that kind is already queued or running."""
        # One parser for every entry point (training.runspec, through run_request): unknown keys, keys of
        # other kinds, operator-only keys, bad values and other projects' ids are a 400 naming the field.
        # RunInputSerializer documents the request; DRF would drop the keys it does not know.
        if not isinstance(request.data, dict):
            raise ApiValidationError({"non_field_errors": ["An object of run options."]})
        spec = dict(request.data.items())
        kind = spec.pop("kind", TrainingRun.Kind.REWARD)
        try:
            run = run_request(project=self.project, kind=kind, trigger="api", requested_by=request.user, spec=spec)
        except RunAlreadyActive as exc:
            return HttpResponse(RunOutputSerializer(exc.run).data, status=status.HTTP_409_CONFLICT)
        return HttpResponse(RunOutputSerializer(run).data, status=status.HTTP_201_CREATED)


class RunDetailApi(ProjectScopedMixin, APIView):
    read_roles = OVERSIGHT_ROLES

    @extend_schema(responses=RunOutputSerializer)
    def get(self, request, slug, run_id):
        return HttpResponse(RunOutputSerializer(get_object_or_404(run_list(project=self.project), pk=run_id)).data)


class RunCancelApi(ProjectScopedMixin, APIView):
    @extend_schema(request=None, responses=RunOutputSerializer)
    def post(self, request, slug, run_id):
        run = get_object_or_404(run_list(project=self.project), pk=run_id)
        run_cancel(run=run)
        return HttpResponse(RunOutputSerializer(run).data)


class VersionListApi(ProjectScopedMixin, generics.ListAPIView):
    """The project's versions plus the shared base models."""

    read_roles = OVERSIGHT_ROLES  # bases, folders, configs and endpoint URLs
    serializer_class = VersionOutputSerializer

    def get_queryset(self):
        return model_version_list(project=self.project, kind=self.request.query_params.get("kind"))

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "online": suggestion_accuracy(project=self.project)}


class _VersionActionApi(ProjectScopedMixin, APIView):
    def version(self, version_id: int) -> ModelVersion:
        return get_object_or_404(model_version_list(project=self.project, include_base=False), pk=version_id)


class VersionPromoteApi(_VersionActionApi):
    @extend_schema(request=None, responses=VersionOutputSerializer)
    def post(self, request, slug, version_id):
        return HttpResponse(VersionOutputSerializer(model_version_promote(version=self.version(version_id))).data)


class VersionDemoteApi(_VersionActionApi):
    @extend_schema(request=None, responses=VersionOutputSerializer)
    def post(self, request, slug, version_id):
        return HttpResponse(VersionOutputSerializer(model_version_demote(version=self.version(version_id))).data)


class EndpointInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, help_text="The version's name, shown as the responses' source.")
    # A CharField checked by the endpoint's own rule (an internal name such as http://gpu-1:8000/v1 has no
    # TLD, which URLField refuses); the service then resolves the host against the operator's allow-list.
    base_url = serializers.CharField(max_length=2000, help_text=(
        "The server's OpenAI-compatible base URL, e.g. https://api.example.com/v1: no query, fragment or "
        "user:password@. Hosts on loopback, link-local or private networks are refused unless the operator "
        "names them in PAIRWISE_ENDPOINT_ALLOWED_NETWORKS."))
    model = serializers.CharField(max_length=200, help_text="The model name the server expects.")
    api_key_env = serializers.CharField(required=False, allow_blank=True, default="", max_length=200, help_text=(
        "Name of the environment variable (on the workers) holding the key; it must start with the operator's "
        "PAIRWISE_ENDPOINT_KEY_ENV_PREFIX (PAIRWISE_ENDPOINT_KEY_ by default). The key itself is never returned."))
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=5)
    top_p = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1)
    max_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=32768)
    concurrency = serializers.IntegerField(required=False, default=4, min_value=1, max_value=256)
    timeout_s = serializers.FloatField(required=False, default=60.0, min_value=0.1, max_value=3600)

    def validate_base_url(self, value: str) -> str:
        problem = url_problem(value.strip())
        if problem:
            raise ApiValidationError(problem)
        return value.strip()


class EndpointCreateApi(ProjectScopedMixin, APIView):
    """Register an OpenAI-compatible server (vLLM, TGI, llama.cpp, OpenAI) as a policy version of the
    project, for candidate generation and blind A/B evaluations (project admins). The key stays in the
    workers' environment; only its variable's name is stored."""

    @extend_schema(request=EndpointInputSerializer, responses={201: VersionOutputSerializer})
    def post(self, request, slug):
        data = EndpointInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = endpoint_version_register(project=self.project, **data.validated_data)
        return HttpResponse(VersionOutputSerializer(version).data, status=status.HTTP_201_CREATED)


class VersionMergeApi(_VersionActionApi):
    """Merge a LoRA policy version into a new plain version (project admins)."""

    @extend_schema(request=None, responses={201: VersionOutputSerializer})
    def post(self, request, slug, version_id):
        merged = model_version_merge(version=self.version(version_id))
        return HttpResponse(VersionOutputSerializer(merged).data, status=status.HTTP_201_CREATED)


class VersionCardApi(ProjectScopedMixin, APIView):
    """The version's model card (README.md with Hugging Face YAML metadata): the file in its folder,
    else the card its registry facts make now (shared base models)."""

    read_roles = OVERSIGHT_ROLES

    @extend_schema(responses=inline_serializer("ModelCard", fields={
        "version": serializers.IntegerField(), "markdown": serializers.CharField()}))
    def get(self, request, slug, version_id):
        version = get_object_or_404(model_version_list(project=self.project), pk=version_id)
        return HttpResponse({"version": version.pk, "markdown": model_card_text(version=version)})


class VersionEvaluateApi(DeclaredSizeMixin, _VersionActionApi):
    """Same evaluation as `manage.py evaluate_reward_model`: upload a file (`file`, gzip or plain JSONL of
    {id, prompt, chosen, rejected}) or post {"records": [...]}. With `name` (project admins) the result
    is kept on the version under that name, as `--record` keeps it."""

    # Scoring changes nothing, so viewers may; annotators may not load models on the server.
    write_roles = OVERSIGHT_ROLES
    parser_classes = [BoundedJSONParser, MultiPartParser, FormParser]

    def upload_limit(self) -> int:
        return settings.PAIRWISE_MAX_EVAL_UPLOAD_BYTES

    @extend_schema(
        request=inline_serializer("RewardEvaluationInput", fields={
            "records": serializers.ListField(child=serializers.DictField(), required=False),
            "file": serializers.FileField(required=False),
            "name": serializers.CharField(required=False, help_text="Keep the result on the version under this name (admins)."),
        }),
        responses=EVAL_RESULT,
    )
    def post(self, request, slug, version_id):
        version = self.version(version_id)
        name = request.data.get("name", "") if hasattr(request.data, "get") else ""
        if not isinstance(name, str):
            raise ApiValidationError({"name": "A string."})
        if name and self.role not in ADMIN_ROLES:
            raise PermissionDenied("Only project admins can keep an evaluation on a version.")
        source = ""
        if "file" in request.FILES:
            source = request.FILES["file"].name
            try:
                records = parse_preference_upload(request.FILES["file"], source, limit=settings.PAIRWISE_MAX_EVAL_UPLOAD_BYTES,
                                                  max_records=SYNC_EVALUATION_MAX_RECORDS)
            except ValueError as exc:
                raise ApiValidationError({"file": str(exc)}) from None
        else:
            records = request.data.get("records") if isinstance(request.data, dict) else None
        if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
            raise ApiValidationError({"records": "Give a non-empty list of {prompt, chosen, rejected} records or a file."})
        if len(records) > SYNC_EVALUATION_MAX_RECORDS:
            raise ApiValidationError({"records": f"At most {SYNC_EVALUATION_MAX_RECORDS} records; use the command for more."})
        return HttpResponse(reward_model_evaluate(version=version, records=records, record_as=name, source=source))
