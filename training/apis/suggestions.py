"""The promoted reward model's pick for a judgment, for the labeling page once the judgment is stored
(training.services.suggestions). 404 until the judgment exists and for anyone but its annotator and
the project's admins; 409 when suggestions are off or there is no promoted reward model."""
from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response as HttpResponse
from rest_framework.views import APIView

from labeling.apis.base import ProjectScopedMixin
from training.models import Suggestion
from training.selectors.suggestions import suggestion_judgment_get
from training.services.suggestions import SuggestionUnavailable, suggestion_for_judgment


class SuggestionOutputSerializer(serializers.ModelSerializer):
    version_name = serializers.CharField(source="version.name", read_only=True)

    class Meta:
        model = Suggestion
        fields = ["judgment", "version", "version_name", "pick", "probability", "scores", "human_ranking", "created_at"]


class JudgmentSuggestionApi(ProjectScopedMixin, APIView):
    @extend_schema(responses={200: SuggestionOutputSerializer, 409: None})
    def get(self, request, slug, judgment_id):
        judgment = suggestion_judgment_get(project=self.project, judgment_id=judgment_id)
        if judgment is None:
            raise Http404("No such judgment.")
        try:
            suggestion = suggestion_for_judgment(judgment=judgment, user=request.user)
        except SuggestionUnavailable as exc:
            return HttpResponse({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return HttpResponse(SuggestionOutputSerializer(suggestion).data)
