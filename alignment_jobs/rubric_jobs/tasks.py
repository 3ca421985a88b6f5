"""Celery tasks for model-drafted rubrics and model grading (queue ``gpu``, by name).

Both are idempotent by construction: the worker re-reads what is still wanted, a rubric is
stored under a row lock, and verdicts are inserted ignoring conflicts on (grader, response,
criterion). So ``acks_late`` is safe; ``reject_on_worker_lost`` is not set, because without an
attempt counter in the database a task that kills its worker would be redelivered forever; the
coordinator launches again instead, and finished work is skipped.
"""

from __future__ import annotations

from celery import shared_task

from alignment_jobs.rubric_jobs import drafting, grading


@shared_task(name="alignment_jobs.rubric_draft", acks_late=True)
def rubric_draft_task(
    arm_id: int,
    case_ids: list[int],
    replace: bool = False,
    engine: str = "auto",
    max_tokens: int | None = None,
) -> str:
    """Draft rubrics with the arm's model for those of these cases (pks) still without one."""
    outcome = drafting.rubric_draft_run(
        arm_id=arm_id, case_ids=case_ids, replace=replace, engine=engine, max_tokens=max_tokens
    )
    return (
        f"drafted {len(outcome.drafted)}, skipped {len(outcome.skipped)}, "
        f"failed {len(outcome.failed)}"
    )


@shared_task(name="alignment_jobs.rubric_grade", acks_late=True)
def rubric_grade_task(
    grader_arm_id: int, response_ids: list[int], engine: str = "auto", method: str = "auto"
) -> str:
    """Grade these responses (pks) against their verified rubrics with the grader arm's model."""
    outcome = grading.rubric_grade_run(
        grader_arm_id=grader_arm_id, response_ids=response_ids, engine=engine, method=method
    )
    return (
        f"stored {outcome.stored} verdict(s), {outcome.unparseable} unparseable, "
        f"skipped {outcome.skipped} response(s)"
    )
