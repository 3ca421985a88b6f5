from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.http import HttpRequest

from clinic_eval.models import (
    Arm,
    Assignment,
    AuditEvent,
    Case,
    DataImport,
    Judgment,
    JudgmentEdit,
    Response,
    Study,
    User,
)


@admin.register(User)
class ClinicUserAdmin(UserAdmin):
    list_display = ["username", "email", "role", "is_active", "is_superuser", "last_login"]
    list_filter = ["role", "is_active", "is_superuser"]
    fieldsets = [*(UserAdmin.fieldsets or ()), ("Role", {"fields": ["role"]})]
    add_fieldsets = [*UserAdmin.add_fieldsets, ("Role", {"fields": ["role"]})]


class ArmInline(admin.TabularInline):
    model = Arm
    extra = 0
    fields = ["label", "kind", "description"]


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ["title", "status", "created_at"]
    list_filter = ["status"]
    search_fields = ["title"]
    filter_horizontal = ["coordinators"]
    readonly_fields = ["status_changed_at", "created_at", "design_hash", "opened_at", "public_id"]
    inlines = [ArmInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Study | None = None) -> list[str]:
        fields = list(self.readonly_fields)
        if obj is not None and obj.is_frozen:
            # The hash on the study page vouches for these; not even the admin edits them.
            fields += ["design", "rubric", "analysis_plan", "seed", "status"]
        return fields


@admin.register(Case)
class CaseAdmin(admin.ModelAdmin):
    list_display = ["external_id", "study", "stratum", "original_author_ref"]
    list_filter = ["study", "stratum"]
    search_fields = ["external_id", "narrative"]
    raw_id_fields = ["study", "original_author", "data_import"]


@admin.register(Response)
class ResponseAdmin(admin.ModelAdmin):
    list_display = ["case", "arm", "sample_index", "created_at"]
    list_filter = ["arm__study", "arm"]
    raw_id_fields = ["case", "arm", "data_import"]


@admin.register(DataImport)
class DataImportAdmin(admin.ModelAdmin):
    list_display = ["__str__", "study", "status", "row_count", "error_count", "created_at"]
    list_filter = ["status", "kind"]
    readonly_fields = [
        "sha256",
        "size_bytes",
        "attempts",
        "row_count",
        "error_count",
        "errors",
        "started_at",
        "finished_at",
    ]


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rating records change only through the rating services, which audit every edit."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Assignment)
class AssignmentAdmin(ReadOnlyAdmin):
    list_display = ["public_id", "study", "rater", "queue_position", "is_repeat", "status"]
    list_filter = ["status", "is_repeat", "study"]


@admin.register(Judgment)
class JudgmentAdmin(ReadOnlyAdmin):
    list_display = ["assignment", "rater", "preference", "revision", "created_at", "updated_at"]
    list_filter = ["study", "preference"]


@admin.register(JudgmentEdit)
class JudgmentEditAdmin(ReadOnlyAdmin):
    list_display = ["judgment", "editor", "edited_at", "reason"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "actor_username", "action", "study_id", "target", "summary", "via"]
    list_filter = ["action", "via"]
    search_fields = ["actor_username", "summary", "target"]
