"""Quality endpoints for project admins and viewers: agreement, alpha, kappa, gold, position bias,
safety, consensus and Bradley-Terry leaderboards. The work is in labeling.selectors.quality."""
from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response as HttpResponse
from rest_framework.views import APIView

from labeling.apis.base import ProjectScopedMixin
from labeling.selectors import quality
from labeling.selectors.machine_quality import machine_quality_report
from labeling.selectors.projects import OVERSIGHT_ROLES


class RoundsParamsSerializer(serializers.Serializer):
    rounds = serializers.IntegerField(min_value=0, max_value=1000, default=200,
                                      help_text="Bootstrap rounds for the 95% intervals.")


class QualityParamsSerializer(RoundsParamsSerializer):
    period = serializers.ChoiceField(choices=quality.PERIODS, default="week")
    min_overlap = serializers.IntegerField(min_value=1, default=20)


class ConsensusParamsSerializer(serializers.Serializer):
    min_agreement = serializers.FloatField(min_value=0, max_value=1, default=0.0)
    min_votes = serializers.IntegerField(min_value=1, default=2)


class PairConsensusSerializer(serializers.Serializer):
    a = serializers.IntegerField(help_text="Response id.")
    b = serializers.IntegerField(help_text="Response id.")
    votes = serializers.IntegerField()
    winner = serializers.IntegerField(allow_null=True, help_text="Response id; null without a strict majority.")
    agreement = serializers.FloatField()
    unanimous = serializers.BooleanField()


class SourceRatingSerializer(serializers.Serializer):
    rank = serializers.IntegerField()
    source = serializers.CharField()
    rating = serializers.FloatField()
    ci_low = serializers.FloatField()
    ci_high = serializers.FloatField()
    battles = serializers.IntegerField()


class ResponseRatingSerializer(serializers.Serializer):
    response_id = serializers.IntegerField()
    rating = serializers.FloatField()


def _params(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class QualityReportApi(ProjectScopedMixin, APIView):
    """Agreement (project, per annotator, over time), alpha, kappa, gold and time per annotator,
    position bias, flag rates per source and the source leaderboard, in one report; `machines`: each
    machine annotator measured against the people, and per model version under `versions`
    (labeling.selectors.machine_quality)."""

    read_roles = OVERSIGHT_ROLES

    @extend_schema(parameters=[QualityParamsSerializer], responses=dict)
    def get(self, request, slug):
        report = quality.quality_report(project=self.project, **_params(QualityParamsSerializer, request))
        return HttpResponse({**report, "machines": machine_quality_report(project=self.project)})


class PairConsensusListApi(ProjectScopedMixin, APIView):
    """Majority vote per response pair, filtered by minimum agreement and votes."""

    read_roles = OVERSIGHT_ROLES

    @extend_schema(parameters=[ConsensusParamsSerializer], responses=PairConsensusSerializer(many=True))
    def get(self, request, slug):
        return HttpResponse(quality.pair_consensus_list(project=self.project, **_params(ConsensusParamsSerializer, request)))


class SourceLeaderboardApi(ProjectScopedMixin, APIView):
    """Bradley-Terry ratings of response sources with bootstrap 95% intervals, as Chatbot Arena does."""

    read_roles = OVERSIGHT_ROLES

    @extend_schema(parameters=[RoundsParamsSerializer], responses=SourceRatingSerializer(many=True))
    def get(self, request, slug):
        rounds = _params(RoundsParamsSerializer, request)["rounds"]
        return HttpResponse(quality.source_leaderboard(project=self.project, rounds=rounds))


class PromptBradleyTerryApi(ProjectScopedMixin, APIView):
    """Bradley-Terry ratings of one prompt's responses, best first."""

    read_roles = OVERSIGHT_ROLES

    @extend_schema(responses=ResponseRatingSerializer(many=True))
    def get(self, request, slug, prompt_id):
        if not self.project.prompts.filter(pk=prompt_id).exists():
            raise Http404("No such prompt.")
        return HttpResponse(quality.prompt_bradley_terry(project=self.project, prompt_id=prompt_id))
