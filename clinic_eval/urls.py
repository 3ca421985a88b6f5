from __future__ import annotations

from csp.constants import UNSAFE_INLINE
from csp.decorators import csp_update
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from alignment_jobs import urls as job_urls
from clinic_eval.accounts import api as auth_api
from clinic_eval.adjudication import views as adjudication_views
from clinic_eval.audit import views as audit_views
from clinic_eval.design import views as design_views
from clinic_eval.design.power import views as power_views
from clinic_eval.imports import api as imports_api
from clinic_eval.imports import views as imports_views
from clinic_eval.monitoring import views as monitoring_views
from clinic_eval.rating import api as rater_api
from clinic_eval.rating import views as rating_views
from clinic_eval.results import api as results_api
from clinic_eval.results import views as results_views
from clinic_eval.rubrics import views as rubric_views
from clinic_eval.studies import api as studies_api
from clinic_eval.studies import views as studies_views
from clinic_eval.web import views as web_views

coordinator_patterns = [
    path("", studies_views.study_list, name="study_list"),
    path("studies/<int:study_id>/", studies_views.study_detail, name="study_detail"),
    path("studies/<int:study_id>/status/", design_views.study_transition, name="study_transition"),
    path("studies/<int:study_id>/arms/", studies_views.arm_create, name="arm_create"),
    path("studies/<int:study_id>/cases/", studies_views.case_list, name="case_list"),
    path(
        "studies/<int:study_id>/cases/<int:case_id>/", studies_views.case_detail, name="case_detail"
    ),
    path("studies/<int:study_id>/design/", design_views.study_design, name="study_design"),
    path(
        "studies/<int:study_id>/design/preview/",
        design_views.study_design_preview,
        name="study_design_preview",
    ),
    path(
        "studies/<int:study_id>/design.csv", design_views.study_design_csv, name="study_design_csv"
    ),
    path("studies/<int:study_id>/power/", power_views.study_power, name="study_power"),
    path(
        "studies/<int:study_id>/power/<int:analysis_id>/",
        power_views.study_power_status,
        name="study_power_status",
    ),
    path(
        "studies/<int:study_id>/balance.csv",
        design_views.study_balance_csv,
        name="study_balance_csv",
    ),
    path("studies/<int:study_id>/monitor/", monitoring_views.study_monitor, name="study_monitor"),
    path("studies/<int:study_id>/audit/", audit_views.study_audit, name="study_audit"),
    path("studies/<int:study_id>/results/", results_views.study_results, name="study_results"),
    path(
        "studies/<int:study_id>/results/responses/",
        results_views.response_viewer,
        name="response_viewer",
    ),
    path("studies/<int:study_id>/export/", results_views.study_export, name="study_export"),
    path(
        "studies/<int:study_id>/export/<str:name>",
        results_views.study_export,
        name="study_export_file",
    ),
    path(
        "studies/<int:study_id>/raters/<int:rater_id>/remind/",
        monitoring_views.rater_remind,
        name="rater_remind",
    ),
    path(
        "studies/<int:study_id>/raters/<int:rater_id>/reassign/",
        monitoring_views.rater_reassign,
        name="rater_reassign",
    ),
    path(
        "studies/<int:study_id>/adjudications/assign/",
        monitoring_views.adjudication_assign,
        name="adjudication_assign",
    ),
    path("studies/<int:study_id>/imports/new/", imports_views.import_create, name="import_create"),
    path(
        "studies/<int:study_id>/imports/<int:import_id>/",
        imports_views.import_detail,
        name="import_detail",
    ),
]

# Every id a physician sees is an opaque random token (Study.public_id, Assignment.public_id).
rater_patterns = [
    path("", rating_views.rater_home, name="home"),
    path("studies/<str:study_id>/next/", rating_views.rater_next, name="next"),
    path("studies/<str:study_id>/rated/", rating_views.rater_rated, name="rated"),
    path("items/<str:public_id>/", rating_views.rater_item, name="item"),
    # An adjudicator's items: only those handed to them (access.adjudication_get_for_adjudicator).
    path("adjudications/", adjudication_views.adjudication_queue, name="adjudication_queue"),
    path(
        "adjudications/<str:adjudication_id>/",
        adjudication_views.adjudication_item,
        name="adjudication_item",
    ),
]

api_patterns = [
    path("auth/token/", auth_api.TokenObtainApi.as_view(), name="token"),
    path("studies/", studies_api.StudyListApi.as_view(), name="study_list"),
    path("studies/<int:study_id>/", studies_api.StudyDetailApi.as_view(), name="study_detail"),
    path("studies/<int:study_id>/cases/", imports_api.CaseListApi.as_view(), name="case_list"),
    path(
        "studies/<int:study_id>/cases/<int:case_id>/",
        studies_api.CaseDetailApi.as_view(),
        name="case_detail",
    ),
    path("studies/<int:study_id>/arms/", studies_api.ArmListApi.as_view(), name="arm_list"),
    path(
        "studies/<int:study_id>/imports/",
        imports_api.DataImportListApi.as_view(),
        name="import_list",
    ),
    path(
        "studies/<int:study_id>/imports/<int:import_id>/",
        imports_api.DataImportDetailApi.as_view(),
        name="import_detail",
    ),
    # The rater flow: only opaque public ids, as on the rater pages.
    path("rate/studies/", rater_api.RateStudyListApi.as_view(), name="rate_study_list"),
    path("rate/studies/<str:study_id>/next/", rater_api.RateNextApi.as_view(), name="rate_next"),
    path("rate/items/<str:public_id>/", rater_api.RateItemApi.as_view(), name="rate_item"),
    path(
        "rate/items/<str:public_id>/judgment/",
        rater_api.RateJudgmentApi.as_view(),
        name="rate_judgment",
    ),
    path(
        "studies/<int:study_id>/report/", results_api.StudyReportApi.as_view(), name="study_report"
    ),
    path(
        "studies/<int:study_id>/export/", results_api.StudyExportApi.as_view(), name="study_export"
    ),
    path(
        "studies/<int:study_id>/export/<str:name>",
        results_api.StudyExportFileApi.as_view(),
        name="study_export_file",
    ),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI's page carries one inline <style>; scripts stay restricted to this server.
    path(
        "docs/",
        csp_update({"style-src": [UNSAFE_INLINE]})(
            SpectacularSwaggerSplitView.as_view(url_name="api:schema")
        ),
        name="docs",
    ),
]

# Criteria rubrics: the coordinator's pages by study, the physicians' by opaque rubric id.
rubric_patterns = [
    path(
        "coordinator/studies/<int:study_id>/rubrics/", rubric_views.rubric_overview, name="overview"
    ),
    path(
        "coordinator/studies/<int:study_id>/rubrics/import/",
        rubric_views.rubric_import,
        name="import",
    ),
    path(
        "coordinator/studies/<int:study_id>/rubrics.jsonl",
        rubric_views.rubric_export,
        name="export",
    ),
    path(
        "coordinator/studies/<int:study_id>/rubrics/<int:rubric_id>/",
        rubric_views.rubric_detail,
        name="detail",
    ),
    path(
        "coordinator/studies/<int:study_id>/rubrics/<int:rubric_id>/criteria/",
        rubric_views.criterion_add,
        name="criterion_add",
    ),
    path(
        "coordinator/studies/<int:study_id>/rubrics/<int:rubric_id>/criteria/<int:criterion_id>/",
        rubric_views.criterion_edit,
        name="criterion_edit",
    ),
    path(
        "coordinator/studies/<int:study_id>/rubrics/<int:rubric_id>/criteria/<int:criterion_id>/delete/",
        rubric_views.criterion_delete,
        name="criterion_delete",
    ),
    path("rate/rubrics/", rubric_views.rubric_queue, name="queue"),
    path("rate/rubrics/<str:rubric_id>/", rubric_views.rubric_review, name="review"),
    path("rate/rubrics/<str:rubric_id>/verify/", rubric_views.rubric_verify, name="verify"),
    path("rate/rubrics/<str:rubric_id>/criteria/", rubric_views.review_add, name="review_add"),
    path(
        "rate/rubrics/<str:rubric_id>/criteria/<str:criterion_id>/",
        rubric_views.review_edit,
        name="review_edit",
    ),
    path(
        "rate/rubrics/<str:rubric_id>/criteria/<str:criterion_id>/delete/",
        rubric_views.review_delete,
        name="review_delete",
    ),
]

urlpatterns = [
    path("", web_views.home, name="home"),
    path("healthz", web_views.healthz, name="healthz"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("coordinator/", include((coordinator_patterns, "coordinator"))),
    path("coordinator/", include((job_urls.urlpatterns, "jobs"))),
    path("rate/", include((rater_patterns, "rater"))),
    path("api/", include((api_patterns + job_urls.api_urlpatterns, "api"))),
    path("admin/", admin.site.urls),
    path("", include((rubric_patterns, "rubrics"))),
]

# Uncaught errors; a lost database connection answers 503 with Retry-After.
handler500 = "clinic_eval.web.db_errors.server_error"
handler404 = "clinic_eval.web.error_pages.not_found"
