from django.urls import path

from labeling.apis import annotate

urlpatterns = [
    path("projects/<slug:slug>/next/", annotate.ProjectNextApi.as_view(), name="api-next"),
    path("assignments/<int:assignment_id>/submit/", annotate.AssignmentSubmitApi.as_view(), name="api-submit"),
    path("assignments/<int:assignment_id>/skip/", annotate.AssignmentSkipApi.as_view(), name="api-skip"),
    path("judgments/<int:judgment_id>/correct/", annotate.JudgmentCorrectApi.as_view(), name="api-judgment-correct"),
]
