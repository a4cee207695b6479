"""REST API for training rounds (pipelines), blind A/B evaluations and the version leaderboard,
under /api/training/. Reads are for viewers and admins (a round's steps carry runs' params and
errors; annotators labeling a blind A/B must not learn which side is which); starting things needs
the admin role."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.response import Response as HttpResponse
from rest_framework.views import APIView

from labeling.apis.base import ProjectScopedMixin
from labeling.selectors.projects import OVERSIGHT_ROLES
from training import plan
from training.apis.runs import RunOutputSerializer
from training.models import ModelVersion
from training.selectors.ab import ab_evaluation_list, ab_leaderboard
from training.selectors.runs import pipeline_list, pipeline_spec
from training.selectors.versions import model_version_list, version_flag_rates
from training.services.ab import ab_evaluation_create
from training.services.rounds import pipeline_start
from training.services.runs import RunAlreadyActive
from training.services.runspec import ab_spec_check


class PipelineInputSerializer(serializers.Serializer):
    policy_kind = serializers.ChoiceField(choices=list(plan.POLICY_KINDS), default=plan.DEFAULT_POLICY_KIND)
    auto_promote_margin = serializers.FloatField(required=False, allow_null=True, min_value=-1, max_value=1,
                                                 help_text="Promote the new policy when it beats its parent by this; "
                                                           "null keeps promotion manual.")
    promote_metric = serializers.ChoiceField(choices=list(plan.PROMOTE_METRICS), default=plan.DEFAULT_PROMOTE_METRIC)
    step_params = serializers.DictField(required=False, help_text='Per-step run params, e.g. {"dpo": {"config": {"epochs": 2}}}.')


class PipelineListApi(ProjectScopedMixin, APIView):
    """The latest training rounds with their steps and progress; POST starts a round now."""

    read_roles = OVERSIGHT_ROLES

    @extend_schema(responses=inline_serializer("PipelineList", fields={"pipelines": serializers.ListField(child=serializers.DictField())}))
    def get(self, request, slug):
        return HttpResponse({"pipelines": pipeline_list(project=self.project)})

    @extend_schema(request=PipelineInputSerializer, responses={201: RunOutputSerializer, 409: RunOutputSerializer})
    def post(self, request, slug):
        # Parsed by training.runspec (pipeline_spec): each step's params as that kind's run, unknown and
        # operator-only keys refused; ids checked against the project in pipeline_start. A service
        # ValidationError becomes a 400 with field errors in labeling.apis.base.exception_handler.
        if not isinstance(request.data, dict):
            raise ApiValidationError({"non_field_errors": ["An object of round options."]})
        try:
            spec = pipeline_spec(**{str(k): v for k, v in request.data.items()})
            run = pipeline_start(project=self.project, spec=spec, trigger="api", requested_by=request.user)
        except RunAlreadyActive as exc:
            return HttpResponse(RunOutputSerializer(exc.run).data, status=status.HTTP_409_CONFLICT)
        return HttpResponse(RunOutputSerializer(run).data, status=status.HTTP_201_CREATED)


class AbEvaluationInputSerializer(serializers.Serializer):
    version_a = serializers.IntegerField()
    version_b = serializers.IntegerField()
    prompts = serializers.IntegerField(default=20, min_value=1, max_value=1000)


class AbEvaluationListApi(ProjectScopedMixin, APIView):
    """Blind human A/B evaluations made from this project; POST creates one (a pairwise project whose
    tasks show the two versions' responses, sides randomised) and queues its generation run."""

    read_roles = OVERSIGHT_ROLES

    @extend_schema(responses=inline_serializer("AbEvaluationList", fields={"evaluations": serializers.ListField(child=serializers.DictField())}))
    def get(self, request, slug):
        return HttpResponse({"evaluations": ab_evaluation_list(project=self.project)})

    @extend_schema(request=AbEvaluationInputSerializer, responses={201: inline_serializer("AbEvaluationCreated", fields={
        "project": serializers.CharField(), "run": RunOutputSerializer()})})
    def post(self, request, slug):
        if not isinstance(request.data, dict):
            raise ApiValidationError({"non_field_errors": ["An object with version_a, version_b and prompts."]})
        a, b, prompts = ab_spec_check(project=self.project, spec=dict(request.data.items()))
        run = ab_evaluation_create(project=self.project, version_a=a, version_b=b, prompts=prompts,
                                   created_by=request.user)
        return HttpResponse({"project": run.project.slug, "run": RunOutputSerializer(run).data}, status=status.HTTP_201_CREATED)


class LeaderboardParamsSerializer(serializers.Serializer):
    rounds = serializers.IntegerField(min_value=0, max_value=2000, default=200,
                                      help_text="Bootstrap rounds for the 95% intervals.")


class LeaderboardApi(ProjectScopedMixin, APIView):
    """Bradley-Terry ratings of model versions from the blind A/B evaluations, with bootstrap 95%
    intervals, and each policy version's flag rates from human judgments."""

    read_roles = OVERSIGHT_ROLES

    @extend_schema(parameters=[LeaderboardParamsSerializer], responses=inline_serializer("VersionLeaderboard", fields={
        "leaderboard": serializers.ListField(child=serializers.DictField()),
        "flag_rates": serializers.DictField()}))
    def get(self, request, slug):
        params = LeaderboardParamsSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        rounds = params.validated_data["rounds"]
        versions = list(model_version_list(project=self.project, kind=ModelVersion.Kind.POLICY).values_list("pk", flat=True))
        return HttpResponse({
            "leaderboard": ab_leaderboard(project=self.project, rounds=rounds),
            "flag_rates": {str(k): v for k, v in version_flag_rates(version_ids=versions).items()},
        })
