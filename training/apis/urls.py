from django.urls import path

from training.apis import machine_annotators, policy, runs, suggestions

urlpatterns = [
    path("projects/<slug:slug>/runs/", runs.RunListApi.as_view(), name="api-training-runs"),
    path("projects/<slug:slug>/runs/<int:run_id>/", runs.RunDetailApi.as_view(), name="api-training-run"),
    path("projects/<slug:slug>/runs/<int:run_id>/cancel/", runs.RunCancelApi.as_view(), name="api-training-run-cancel"),
    path("projects/<slug:slug>/versions/", runs.VersionListApi.as_view(), name="api-training-versions"),
    path("projects/<slug:slug>/versions/<int:version_id>/promote/", runs.VersionPromoteApi.as_view(),
         name="api-training-version-promote"),
    path("projects/<slug:slug>/versions/<int:version_id>/demote/", runs.VersionDemoteApi.as_view(),
         name="api-training-version-demote"),
    path("projects/<slug:slug>/versions/<int:version_id>/merge/", runs.VersionMergeApi.as_view(),
         name="api-training-version-merge"),
    path("projects/<slug:slug>/versions/<int:version_id>/card/", runs.VersionCardApi.as_view(),
         name="api-training-version-card"),
    path("projects/<slug:slug>/versions/<int:version_id>/evaluate/", runs.VersionEvaluateApi.as_view(),
         name="api-training-version-evaluate"),
    path("projects/<slug:slug>/endpoints/", runs.EndpointCreateApi.as_view(), name="api-training-endpoints"),
    path("projects/<slug:slug>/pipelines/", policy.PipelineListApi.as_view(), name="api-training-pipelines"),
    path("projects/<slug:slug>/ab-evaluations/", policy.AbEvaluationListApi.as_view(), name="api-training-ab-evaluations"),
    path("projects/<slug:slug>/leaderboard/", policy.LeaderboardApi.as_view(), name="api-training-leaderboard"),
    path("projects/<slug:slug>/machine-annotators/", machine_annotators.MachineAnnotatorListApi.as_view(),
         name="api-training-machine-annotators"),
    path("projects/<slug:slug>/machine-annotators/<int:machine_id>/", machine_annotators.MachineAnnotatorDetailApi.as_view(),
         name="api-training-machine-annotator"),
    path("projects/<slug:slug>/machine-annotators/<int:machine_id>/run/", machine_annotators.MachineAnnotatorRunApi.as_view(),
         name="api-training-machine-annotator-run"),
    path("projects/<slug:slug>/judgments/<int:judgment_id>/suggestion/", suggestions.JudgmentSuggestionApi.as_view(),
         name="api-training-judgment-suggestion"),
]
