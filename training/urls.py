from django.urls import path

from training import views

urlpatterns = [
    path("<slug:slug>/", views.runs_page, name="training-runs"),
    path("<slug:slug>/runs.json", views.runs_json, name="training-runs-json"),
    path("<slug:slug>/train/", views.train_now, name="training-train"),
    path("<slug:slug>/runs/<int:run_id>/cancel/", views.run_cancel, name="training-run-cancel"),
    path("<slug:slug>/versions/<int:version_id>/promote/", views.version_promote, name="training-version-promote"),
    path("<slug:slug>/versions/<int:version_id>/demote/", views.version_demote, name="training-version-demote"),
]
