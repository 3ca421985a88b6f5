from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from clinic_eval.models import Arm, Case, DataImport, Response, Study, User


@admin.register(User)
class ClinicUserAdmin(UserAdmin):
    list_display = ["username", "email", "role", "is_active", "is_superuser", "last_login"]
    list_filter = ["role", "is_active", "is_superuser"]
    fieldsets = [*UserAdmin.fieldsets, ("Role", {"fields": ["role"]})]
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
    readonly_fields = ["status_changed_at", "created_at"]
    inlines = [ArmInline]


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
