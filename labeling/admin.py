from django import forms
from django.contrib import admin, messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse

from labeling import models
from labeling.forms import ThrottledAdminAuthenticationForm
from labeling.selectors.exports import ExportFilters
from labeling.services.exports import export_job_create
from labeling.services.imports import DataImportError, project_data_import
from labeling.services.projects import project_restore, project_soft_delete

admin.site.login_form = ThrottledAdminAuthenticationForm


class ImportForm(forms.Form):
    file = forms.FileField(help_text="JSONL, JSON or CSV, optionally gzipped: prompts, prompts with responses, "
                                     "preference pairs, demonstrations.")
    source = forms.CharField(required=False, help_text="Name of the external source of these responses.")


class MembershipInline(admin.TabularInline):
    model = models.Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(models.Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "mode", "responses_per_task", "overlap", "deleted_at", "created_at"]
    list_filter = ["mode", "deleted_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]
    actions = ["soft_delete", "restore", "export_preferences_trl"]
    change_form_template = "admin/labeling/project/change_form.html"

    def get_urls(self):
        extra = [path("<int:pk>/import/", self.admin_site.admin_view(self.import_view), name="labeling_project_import")]
        return extra + super().get_urls()

    def import_view(self, request, pk):
        project = get_object_or_404(models.Project, pk=pk)
        if not self.has_change_permission(request, project):
            return redirect("admin:index")
        form = ImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                result = project_data_import(
                    project=project, stream=upload, filename=upload.name, user=request.user,
                    source=form.cleaned_data["source"],
                )
            except DataImportError as exc:
                for issue in exc.issues[:20]:
                    form.add_error("file", issue.message if issue.field == "file" else str(issue))
            else:
                messages.success(request, f"Imported: {result.as_dict()}")
                return redirect(reverse("admin:labeling_project_change", args=[pk]))
        context = {**self.admin_site.each_context(request), "form": form, "project": project, "title": "Import data"}
        return render(request, "admin/labeling/project/import.html", context, status=400 if form.errors else 200)

    @admin.action(description="Soft-delete selected projects")
    def soft_delete(self, request, queryset):
        for project in queryset:
            project_soft_delete(project=project)

    @admin.action(description="Restore selected projects")
    def restore(self, request, queryset):
        for project in queryset:
            project_restore(project=project)

    @admin.action(description="Export preferences (trl)")
    def export_preferences_trl(self, request, queryset):
        for project in queryset:
            job = export_job_create(project=project, fmt="trl", filters=ExportFilters(), user=request.user, snapshot=True)
            url = reverse("api-export-job", kwargs={"slug": project.slug, "job_id": job.pk})
            messages.info(request, f"{project.slug}: export job {job.pk} queued; progress and download at {url}")


@admin.register(models.Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["project", "user", "role", "created_at"]
    list_filter = ["role", "project"]
    search_fields = ["user__username", "project__slug"]


@admin.register(models.Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "external_id", "created_at"]
    list_filter = ["project"]
    search_fields = ["external_id", "text"]
    show_full_result_count = False


@admin.register(models.Response)
class ResponseAdmin(admin.ModelAdmin):
    list_display = ["id", "prompt", "source", "created_at"]
    list_filter = ["source"]
    search_fields = ["text", "source"]
    raw_id_fields = ["prompt", "model_version"]
    show_full_result_count = False


class TaskResponseInline(admin.TabularInline):
    model = models.TaskResponse
    extra = 0
    raw_id_fields = ["response"]


@admin.register(models.ComparisonTask)
class ComparisonTaskAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "status", "is_gold", "judgments_count", "active_assignments", "created_at"]
    list_filter = ["project", "status", "is_gold"]
    raw_id_fields = ["prompt"]
    inlines = [TaskResponseInline]
    show_full_result_count = False


@admin.register(models.Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "task", "annotator", "state", "leased_at", "expires_at"]
    list_filter = ["project", "state"]
    search_fields = ["annotator__username"]
    raw_id_fields = ["task"]
    show_full_result_count = False


class ImmutableAdmin(admin.ModelAdmin):
    """Judgments and their pairs are immutable: a correction is a new judgment, never an edit."""

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False


@admin.register(models.Judgment)
class JudgmentAdmin(ImmutableAdmin):
    list_display = ["id", "project", "task", "annotator", "source", "both_bad", "time_spent_ms", "created_at"]
    list_filter = ["project", "source", "both_bad"]
    search_fields = ["annotator__username", "rationale", "idempotency_key"]
    show_full_result_count = False


@admin.register(models.PreferencePair)
class PreferencePairAdmin(ImmutableAdmin):
    list_display = ["id", "project", "judgment", "chosen", "rejected", "created_at"]
    list_filter = ["project"]
    show_full_result_count = False


@admin.register(models.Demonstration)
class DemonstrationAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "prompt", "author", "created_at"]
    list_filter = ["project"]
    search_fields = ["text", "author__username"]
    raw_id_fields = ["prompt", "assignment"]


@admin.register(models.DatasetSnapshot)
class DatasetSnapshotAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "format", "rows", "sha256", "created_by", "created_at"]
    list_filter = ["project", "format"]


@admin.register(models.ExportJob)
class ExportJobAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "format", "status", "progress", "rows", "heartbeat_at", "created_at"]
    list_filter = ["project", "status", "format"]


@admin.register(models.ImportBatch)
class ImportBatchAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "filename", "kind", "skipped_duplicates", "created_by", "created_at"]
    list_filter = ["project", "kind"]
