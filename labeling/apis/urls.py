from django.urls import include, path

from labeling.apis import annotators, data, imports, projects

urlpatterns = [
    path("projects/", projects.ProjectListApi.as_view(), name="api-projects"),
    path("projects/<slug:slug>/", projects.ProjectDetailApi.as_view(), name="api-project"),
    path("projects/<slug:slug>/members/", projects.MembershipListApi.as_view(), name="api-members"),
    path("projects/<slug:slug>/annotators/<int:user_id>/exclude/", annotators.AnnotatorExcludeApi.as_view(),
         name="api-annotator-exclude"),
    path("projects/<slug:slug>/annotators/<int:user_id>/include/", annotators.AnnotatorIncludeApi.as_view(),
         name="api-annotator-include"),
    path("projects/<slug:slug>/annotators/<int:user_id>/requeue/", annotators.AnnotatorTasksRequeueApi.as_view(),
         name="api-annotator-requeue"),
    path("projects/<slug:slug>/prompts/", data.PromptListApi.as_view(), name="api-prompts"),
    path("projects/<slug:slug>/responses/", data.ResponseListApi.as_view(), name="api-responses"),
    path("projects/<slug:slug>/tasks/", data.TaskListApi.as_view(), name="api-tasks"),
    path("projects/<slug:slug>/judgments/", data.JudgmentListApi.as_view(), name="api-judgments"),
    path("projects/<slug:slug>/demonstrations/", data.DemonstrationListApi.as_view(), name="api-demonstrations"),
    path("projects/<slug:slug>/imports/", imports.ImportListCreateApi.as_view(), name="api-imports"),
    path("projects/<slug:slug>/imports/jobs/<int:job_id>/", imports.ImportJobDetailApi.as_view(), name="api-import-job"),
    # Annotator workflow (next task, submit, skip) and quality/export endpoints live in their own modules.
    path("", include("labeling.apis.annotate_urls")),
    path("", include("labeling.apis.quality_urls")),
]
