from django.urls import path

from training import views

urlpatterns = [
    path("<slug:slug>/", views.runs_page, name="training-runs"),
    path("<slug:slug>/runs.json", views.runs_json, name="training-runs-json"),
    path("<slug:slug>/train/", views.train_now, name="training-train"),
    path("<slug:slug>/runs/<int:run_id>/cancel/", views.run_cancel, name="training-run-cancel"),
    path("<slug:slug>/versions/<int:version_id>/promote/", views.version_promote, name="training-version-promote"),
    path("<slug:slug>/versions/<int:version_id>/merge/", views.version_merge, name="training-version-merge"),
    path("<slug:slug>/versions/<int:version_id>/demote/", views.version_demote, name="training-version-demote"),
    path("<slug:slug>/pipelines/start/", views.pipeline_start, name="training-pipeline-start"),
    path("<slug:slug>/policy/train/", views.policy_train, name="training-policy-train"),
    path("<slug:slug>/versions/<int:version_id>/evaluate/", views.version_evaluate, name="training-version-evaluate"),
    path("<slug:slug>/versions/<int:version_id>/card/", views.version_card, name="training-version-card"),
    path("<slug:slug>/versions/<int:version_id>/score-file/", views.version_score_file, name="training-version-score-file"),
    path("<slug:slug>/ab/", views.ab_create, name="training-ab-create"),
    path("<slug:slug>/endpoints/", views.endpoint_create, name="training-endpoint-create"),
    path("<slug:slug>/machine-annotators/", views.machine_annotators_page, name="training-machine-annotators"),
    path("<slug:slug>/machine-annotators/<int:machine_id>/", views.machine_annotator_edit,
         name="training-machine-annotator-edit"),
    path("<slug:slug>/machine-annotators/<int:machine_id>/delete/", views.machine_annotator_delete,
         name="training-machine-annotator-delete"),
    path("<slug:slug>/machine-annotators/<int:machine_id>/run/", views.machine_annotator_run,
         name="training-machine-annotator-run"),
    path("<slug:slug>/versions/<int:version_id>/", views.version_detail, name="training-version-detail"),
    path("<slug:slug>/runs/<int:run_id>/", views.run_detail, name="training-run-detail"),
]
