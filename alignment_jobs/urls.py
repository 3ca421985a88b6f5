from __future__ import annotations

from django.urls import path

from alignment_jobs.generation import api, views
from alignment_jobs.rubric_jobs import views as rubric_views

urlpatterns = [
    path("studies/<int:study_id>/jobs/", views.job_list, name="job_list"),
    path("studies/<int:study_id>/jobs/<int:job_id>/", views.job_detail, name="job_detail"),
    path("studies/<int:study_id>/jobs/workers/", views.study_job_workers, name="study_job_workers"),
    path("studies/<int:study_id>/jobs/<int:job_id>/cancel/", views.job_cancel, name="job_cancel"),
    path(
        "studies/<int:study_id>/jobs/<int:job_id>/retry-failed/",
        views.job_retry_failed,
        name="job_retry_failed",
    ),
    path(
        "studies/<int:study_id>/arms/<int:arm_id>/generation/",
        views.spec_edit,
        name="spec_edit",
    ),
    path("studies/<int:study_id>/held/", views.held_responses, name="held_responses"),
    path(
        "studies/<int:study_id>/responses/<int:response_id>/review/",
        views.response_review_view,
        name="response_review",
    ),
    path("studies/<int:study_id>/rubrics/draft/", rubric_views.rubric_draft, name="rubric_draft"),
    path("studies/<int:study_id>/rubrics/grade/", rubric_views.rubric_grade, name="rubric_grade"),
    path(
        "studies/<int:study_id>/rubrics/jobs/",
        rubric_views.rubric_jobs_status,
        name="rubric_jobs_status",
    ),
]

api_urlpatterns = [
    path("studies/<int:study_id>/jobs/", api.JobListApi.as_view(), name="job_list"),
    path(
        "studies/<int:study_id>/jobs/<int:job_id>/", api.JobDetailApi.as_view(), name="job_detail"
    ),
    path(
        "studies/<int:study_id>/jobs/<int:job_id>/cancel/",
        api.JobCancelApi.as_view(),
        name="job_cancel",
    ),
    path(
        "studies/<int:study_id>/jobs/<int:job_id>/retry-failed/",
        api.JobRetryFailedApi.as_view(),
        name="job_retry_failed",
    ),
    path(
        "studies/<int:study_id>/arms/<int:arm_id>/generation/",
        api.SpecApi.as_view(),
        name="spec",
    ),
]
