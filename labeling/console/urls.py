from django.urls import path

from labeling.console import data, exports, members, projects, quality

urlpatterns = [
    path("projects/new/", projects.project_create_page, name="console-project-create"),
    path("projects/markdown-preview/", projects.markdown_preview, name="console-markdown-preview"),
    path("projects/<slug:slug>/", projects.project_overview, name="console-overview"),
    path("projects/<slug:slug>/data/", data.project_data, name="console-data"),
    path("projects/<slug:slug>/annotators/", members.project_annotators, name="console-annotators"),
    path("projects/<slug:slug>/annotators/remove/", members.project_annotator_remove, name="console-annotator-remove"),
    path("projects/<slug:slug>/annotators/refit/", members.project_label_models_refit, name="console-label-models-refit"),
    path("projects/<slug:slug>/annotators/exclude/", members.project_annotator_exclude, name="console-annotator-exclude"),
    path("projects/<slug:slug>/annotators/include/", members.project_annotator_include, name="console-annotator-include"),
    path("projects/<slug:slug>/annotators/requeue/", members.project_annotator_requeue, name="console-annotator-requeue"),
    path("projects/<slug:slug>/export/", exports.project_export, name="console-export"),
    path("projects/<slug:slug>/snapshots/<int:snapshot_id>/", exports.project_snapshot, name="console-snapshot"),
    path("projects/<slug:slug>/settings/", projects.project_settings, name="console-settings"),
    path("projects/<slug:slug>/delete/", projects.project_delete, name="console-project-delete"),
    path("dashboard/<slug:slug>/", quality.project_dashboard, name="dashboard-project"),
    path("account/token/", members.account_token, name="console-token"),
]
