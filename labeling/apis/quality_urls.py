from django.urls import path

from labeling.apis import exports, quality

urlpatterns = [
    path("projects/<slug:slug>/exports/stream/", exports.ExportStreamApi.as_view(), name="api-export-stream"),
    path("projects/<slug:slug>/exports/jobs/", exports.ExportJobListCreateApi.as_view(), name="api-export-jobs"),
    path("projects/<slug:slug>/exports/jobs/<int:job_id>/", exports.ExportJobDetailApi.as_view(),
         name="api-export-job"),
    path("projects/<slug:slug>/exports/jobs/<int:job_id>/download/", exports.ExportJobDownloadApi.as_view(),
         name="api-export-job-download"),
    path("projects/<slug:slug>/snapshots/", exports.SnapshotListCreateApi.as_view(), name="api-snapshots"),
    path("projects/<slug:slug>/snapshots/<int:snapshot_id>/download/", exports.SnapshotDownloadApi.as_view(),
         name="api-snapshot-download"),
    path("projects/<slug:slug>/quality/", quality.QualityReportApi.as_view(), name="api-quality"),
    path("projects/<slug:slug>/quality/consensus/", quality.PairConsensusListApi.as_view(), name="api-consensus"),
    path("projects/<slug:slug>/quality/leaderboard/", quality.SourceLeaderboardApi.as_view(),
         name="api-leaderboard"),
    path("projects/<slug:slug>/prompts/<int:prompt_id>/bradley-terry/", quality.PromptBradleyTerryApi.as_view(),
         name="api-prompt-bradley-terry"),
]
