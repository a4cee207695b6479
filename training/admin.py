from django.contrib import admin

from training.models import ModelVersion, TrainingRun


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "name", "project", "parent", "promoted", "status", "created_at"]
    list_filter = ["kind", "promoted", "status", "project"]
    search_fields = ["name", "base"]
    raw_id_fields = ["parent", "snapshot"]


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "project", "status", "progress", "pipeline_id", "heartbeat_at", "created_at"]
    list_filter = ["kind", "status", "project"]
    raw_id_fields = ["base_version", "result_version", "snapshot"]
    readonly_fields = ["heartbeat_at", "started_at", "finished_at", "log_tail", "metrics_history", "error"]
