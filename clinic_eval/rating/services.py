"""Writes of the rating flow: the design frozen when a study opens, the queue, judgments."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from clinic_eval import sql
from clinic_eval.audit.services import audit_record, changed_fields
from clinic_eval.config import (
    POSITION_LETTERS,
    position_letter,
    position_of,
    preference_choices,
)
from clinic_eval.errors import DomainError, JudgmentInvalid, StaleJudgment
from clinic_eval.models import (
    Assignment,
    AuditEvent,
    CriterionGrade,
    Judgment,
    JudgmentEdit,
    ResponseRating,
    RubricCriterion,
    Study,
    User,
)
from clinic_eval.rating.adjudication import adjudication_check
from clinic_eval.rating.inputs import (
    RUBRIC_PREFERENCE,
    GradeInput,
    JudgmentInput,
    JudgmentOutcome,
    RatingInput,
    answer_key,
    criterion_part,
)
from clinic_eval.rubrics import selectors
from clinic_eval.spans import selectors as spans_selectors
from clinic_eval.spans.services import spans_checked, spans_store
from clinic_eval.spans.text import ResolvedSpan, SpanErrors, as_input, derived_flag

MAX_RATIONALE = 5_000


MAX_NOTE = 2_000


NO_HALLUCINATION = "none"


def _lease(study: Study) -> timedelta:
    return timedelta(minutes=study.design_config.idle_timeout_minutes)


def _claim_from_pool(*, rater: User, study: Study) -> Assignment | None:
    """A seat released by a coordinator, on a comparison this rater may and does not yet rate."""
    mine = Assignment.objects.filter(study=study, rater=rater).values("comparison_id")
    seat = (
        Assignment.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(study=study, rater__isnull=True, status=Assignment.Status.PENDING)
        .exclude(comparison_id__in=mine)
        .exclude(comparison__case__original_author=rater)
        .order_by("queue_position", "id")
        .first()
    )
    if seat is None:
        return None
    last = Assignment.objects.filter(study=study, rater=rater).aggregate(m=Max("queue_position"))
    seat.rater = rater
    seat.queue_position = (last["m"] or 0) + 1
    return seat


def _claim_held_or_next(*, rater: User, study: Study, now: datetime) -> Assignment | None:
    """The seat the rater holds, else their next pending one, leased in one statement.

    One ``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING`` (the queue
    idiom): the row is picked, locked and leased at once, so two requests never take one seat
    and the whole claim is a single query. Nothing is returned when the study is not open.
    SQLite (the demo) has no row locks and serialises writes, so it runs the same statement
    without the locking clause.
    """
    table = Assignment._meta.db_table
    # OF seat: the planner may join the study row in (the EXISTS), and a lock on it would make
    # every other rater claiming at that moment skip the study and find nothing.
    locks = connection.features.has_select_for_update_skip_locked
    lock = " FOR UPDATE OF seat SKIP LOCKED" if locks else ""
    adapt = connection.ops.adapt_datetimefield_value
    statement = f"""
        UPDATE {table} SET leased_until = %s, first_shown_at = COALESCE(first_shown_at, %s)
        WHERE id = (
            SELECT seat.id FROM {table} seat
            WHERE seat.study_id = %s AND seat.rater_id = %s AND seat.status = %s
              AND EXISTS (SELECT 1 FROM {Study._meta.db_table} WHERE id = %s AND status = %s)
            ORDER BY CASE WHEN seat.leased_until > %s THEN 0 ELSE 1 END,
                     seat.queue_position, seat.id
            LIMIT 1{lock}
        )
        RETURNING {sql.columns(Assignment)}
    """  # the table names come from the models; every value is a parameter
    params = [
        adapt(now + _lease(study)),
        adapt(now),
        study.pk,
        rater.pk,
        Assignment.Status.PENDING,
        study.pk,
        Study.Status.OPEN,
        adapt(now),
    ]
    claimed = sql.fetch(statement, params)
    if not claimed:
        return None
    seat = sql.load(Assignment, claimed[0])[0]
    seat.rater = rater
    if study.status == Study.Status.OPEN:
        # The caller's study agrees with the database (the claim saw it open): reuse it. A
        # stale copy (a caller holding it from before it opened) is left to load afresh.
        seat.study = study
    return seat


def assignment_next(*, rater: User, study: Study) -> Assignment | None:
    """The rater's current item: the one they hold, else the next in their queue, else the pool.

    Concurrency-safe: seats are taken with ``SELECT ... FOR UPDATE SKIP LOCKED``, so raters
    asking at once get distinct seats and no comparison gets more raters than it has seats.
    A reload or a second tab gets the same item back while its lease runs.
    """
    now = timezone.now()
    seat = _claim_held_or_next(rater=rater, study=study, now=now)
    if seat is not None:
        return seat
    if not Study.objects.filter(pk=study.pk, status=Study.Status.OPEN).exists():
        return None
    for _ in range(3):
        try:
            with transaction.atomic():
                seat = _claim_from_pool(rater=rater, study=study)
                if seat is None:
                    return None
                seat.leased_until = now + _lease(study)
                seat.first_shown_at = seat.first_shown_at or now
                seat.save(
                    update_fields=["rater", "queue_position", "leased_until", "first_shown_at"]
                )
                return seat
        except IntegrityError:
            # Two tabs of one rater claimed two seats of one pooled comparison at once.
            continue
    return None


def _rationale_errors(study: Study, data: JudgmentInput) -> dict[str, str]:
    errors: dict[str, str] = {}
    if study.design_config.rationale_required and not data.rationale.strip():
        errors["rationale"] = "Give a short rationale for your choice."
    if len(data.rationale.strip()) > MAX_RATIONALE:
        errors["rationale"] = f"Keep the rationale under {MAX_RATIONALE} characters."
    return errors


def _grade_errors(
    study: Study, positions: int, data: JudgmentInput, criteria: Sequence[RubricCriterion]
) -> dict[str, str]:
    """Every criterion of every shown response needs a verdict; keys are "A.c3", "A.c3.note"."""
    errors = _rationale_errors(study, data)
    if data.ratings:
        errors["ratings"] = "This study grades criteria: send grades, not Likert ratings."
    if not criteria:
        errors["grades"] = "This case has no criteria to grade; tell the study coordinator."
    given: dict[tuple[int, int], GradeInput] = {}
    for grade in data.grades:
        if not (0 <= grade.position < positions and 1 <= grade.criterion <= len(criteria)):
            errors["grades"] = "A grade names a response or criterion this item does not show."
            continue
        if (grade.position, grade.criterion) in given:
            errors["grades"] = "A criterion is graded twice for one response."
        given[(grade.position, grade.criterion)] = grade
        if len(grade.note) > MAX_NOTE:
            errors[
                answer_key(position_letter(grade.position), criterion_part(grade.criterion), "note")
            ] = f"Notes are limited to {MAX_NOTE} characters."
    for position in range(positions):
        for number, criterion in enumerate(criteria, 1):
            found = given.get((position, number))
            if found is None or found.met is None:
                errors[answer_key(position_letter(position), criterion_part(number))] = (
                    "Say whether this occurred."
                    if criterion.points < 0
                    else "Say whether this criterion is met."
                )
    return errors


def _judgment_errors(study: Study, positions: int, data: JudgmentInput) -> dict[str, str]:
    rubric = study.rubric_config
    errors: dict[str, str] = {}
    if data.preference not in preference_choices(study.design, positions):
        errors["preference"] = "Choose which response you prefer."
    errors.update(_rationale_errors(study, data))
    if data.grades:
        errors["grades"] = "This study does not grade criteria."
    by_position = {r.position: r for r in data.ratings}
    if sorted(by_position) != list(range(positions)) or len(data.ratings) != positions:
        errors["ratings"] = "Rate every response."
    flag = rubric.hallucination
    for position, rating in by_position.items():
        in_range = 0 <= position < len(POSITION_LETTERS)
        letter = position_letter(position) if in_range else str(position)
        for dimension in rubric.dimensions:
            value = rating.scores.get(dimension.key)
            if value is None or not dimension.scale_min <= value <= dimension.scale_max:
                errors[answer_key(letter, dimension.key)] = (
                    f"Rate {dimension.title.lower()} from {dimension.scale_min} to "
                    f"{dimension.scale_max}."
                )
        extra = set(rating.scores) - {d.key for d in rubric.dimensions}
        if extra:
            errors[answer_key(letter, "scores")] = (
                f"Unknown dimensions: {', '.join(sorted(extra))}."
            )
        if flag.enabled:
            if rating.hallucination not in flag.types:
                errors[answer_key(letter, "hallucination")] = (
                    "Say whether this response hallucinates."
                )
            elif (
                rating.hallucination != NO_HALLUCINATION and rating.severity not in flag.severities
            ):
                errors[answer_key(letter, "severity")] = "Choose how severe the hallucination is."
        if rating.note.strip() and not flag.note_allowed:
            errors[answer_key(letter, "note")] = "This study does not take notes on responses."
        elif len(rating.note) > MAX_NOTE:
            errors[answer_key(letter, "note")] = f"Notes are limited to {MAX_NOTE} characters."
    return errors


def _span_errors(errors: SpanErrors) -> dict[str, str]:
    """``A.span2.quote`` for a problem with the second span marked on Response A."""
    keyed = {}
    for (position, number, part), message in errors.items():
        parts = [f"span{number}" if number else "spans"] + ([part] if part else [])
        keyed[answer_key(position_letter(position), *parts)] = message
    return keyed


def _with_derived_flags(
    study: Study, data: JudgmentInput, spans: Sequence[ResolvedSpan]
) -> JudgmentInput:
    """Where the rubric derives the hallucination flag from spans, each response's flag is
    what its spans imply, whatever was sent."""
    rubric = study.rubric_config
    if not (rubric.spans.enabled and rubric.spans.hallucination_flag == "derived"):
        return data
    ratings = []
    for rating in data.ratings:
        kind, severity = derived_flag(
            (s for s in spans if s.position == rating.position),
            config=rubric.spans,
            flag=rubric.hallucination,
        )
        ratings.append(replace(rating, hallucination=kind, severity=severity))
    return replace(data, ratings=tuple(ratings))


def likert_judgment_checked(
    study: Study, positions: int, data: JudgmentInput, extra_errors: dict[str, str] | None = None
) -> JudgmentInput:
    """A preference-and-Likert answer checked against the study's design and rubric and put in
    canonical form; raises ``JudgmentInvalid`` with every problem (``extra_errors`` too)."""
    errors = {**_judgment_errors(study, positions, data), **(extra_errors or {})}
    if errors:
        raise JudgmentInvalid(errors)
    return _normalised(data, study.rubric_config.hallucination.enabled)


def _normalised(data: JudgmentInput, flag_enabled: bool) -> JudgmentInput:
    """One canonical form, so a retried submission compares equal to the stored one."""
    ratings = tuple(
        RatingInput(
            position=r.position,
            scores={k: int(v) for k, v in sorted(r.scores.items()) if v is not None},
            hallucination=r.hallucination if flag_enabled else "",
            severity=(r.severity if flag_enabled and r.hallucination != NO_HALLUCINATION else ""),
            note=r.note.strip(),
        )
        for r in sorted(data.ratings, key=lambda r: r.position)
    )
    return JudgmentInput(
        preference=data.preference,
        ratings=ratings,
        rationale=data.rationale.strip(),
        spans=data.spans,
    )


def _normalised_grades(data: JudgmentInput) -> JudgmentInput:
    grades = tuple(
        GradeInput(position=g.position, criterion=g.criterion, met=bool(g.met), note=g.note.strip())
        for g in sorted(data.grades, key=lambda g: (g.position, g.criterion))
    )
    return JudgmentInput(
        preference=RUBRIC_PREFERENCE,
        ratings=(),
        rationale=data.rationale.strip(),
        grades=grades,
        spans=data.spans,
    )


def _as_snapshot(data: JudgmentInput) -> dict[str, Any]:
    """A judgment is either Likert (ratings) or rubric (grades); only its own kind is kept,
    so a Likert judgment's snapshot and audit read as they always have."""
    snapshot = asdict(data)
    del snapshot["ratings" if data.grades else "grades"]
    if not data.spans:
        del snapshot["spans"]
    return snapshot


def judgment_snapshot(
    judgment: Judgment, criteria: Sequence[RubricCriterion] | None = None
) -> dict[str, Any]:
    """The stored judgment in the shape of its input; ``criteria`` (the case's, in order)
    numbers a rubric judgment's grades, and is looked up when not given."""
    stored = list(judgment.criterion_grades.all())
    grades: tuple[GradeInput, ...] = ()
    if stored:
        if criteria is None:
            criteria = selectors.case_criteria(case=judgment.assignment.comparison.case)
        number = {c.pk: n for n, c in enumerate(criteria, 1)}
        grades = tuple(
            sorted(
                (
                    GradeInput(
                        position=position_of(g.position),
                        criterion=number[g.criterion_id],
                        met=g.met,
                        note=g.note,
                    )
                    for g in stored
                ),
                key=lambda g: (g.position, g.criterion),
            )
        )
    data = JudgmentInput(
        preference=judgment.preference,
        rationale=judgment.rationale,
        ratings=tuple(
            RatingInput(
                position=r.position,
                scores=dict(sorted(r.scores.items())),
                hallucination=r.hallucination,
                severity=r.severity,
                note=r.note,
            )
            for r in judgment.ratings.order_by("position")
        ),
        grades=grades,
        spans=spans_selectors.judgment_spans(judgment=judgment),
    )
    return _as_snapshot(data)


def _preferred_response(assignment: Assignment, preference: str) -> int | None:
    if len(preference) == 1 and preference.isalpha():
        return assignment.shown_order[position_of(preference)]
    return None


def _store_grades(
    judgment: Judgment,
    assignment: Assignment,
    data: JudgmentInput,
    criteria: Sequence[RubricCriterion],
    *,
    replace: bool = True,
) -> None:
    if replace:
        CriterionGrade.objects.filter(judgment=judgment).delete()
    CriterionGrade.objects.bulk_create(
        CriterionGrade(
            judgment=judgment,
            response_id=assignment.shown_order[g.position],
            position=position_letter(g.position),
            criterion=criteria[g.criterion - 1],
            met=bool(g.met),
            note=g.note,
        )
        for g in data.grades
    )


def _store_ratings(
    judgment: Judgment, assignment: Assignment, data: JudgmentInput, *, replace: bool = True
) -> None:
    if data.grades:
        return
    if replace:
        ResponseRating.objects.filter(judgment=judgment).delete()
    sql.insert(
        [
            ResponseRating(
                judgment=judgment,
                position=r.position,
                response_id=assignment.shown_order[r.position],
                scores=r.scores,
                hallucination=r.hallucination,
                severity=r.severity,
                note=r.note,
            )
            for r in data.ratings
        ]
    )


def _judgment_update(
    judgment: Judgment,
    assignment: Assignment,
    data: JudgmentInput,
    *,
    revision: int,
    editor: User,
    reason: str,
    criteria: Sequence[RubricCriterion],
) -> tuple[Judgment, JudgmentOutcome]:
    before = judgment_snapshot(judgment, criteria)
    after = _as_snapshot(data)
    if before == after:
        return judgment, JudgmentOutcome.UNCHANGED
    if revision != judgment.revision:
        raise StaleJudgment(
            "You already rated this item (perhaps in another tab), so this form was out of "
            "date and nothing was changed. Open the item from your list to edit it."
        )
    judgment.preference = data.preference
    judgment.preferred_response_id = _preferred_response(assignment, data.preference)
    judgment.rationale = data.rationale
    judgment.revision += 1
    judgment.save(
        update_fields=["preference", "preferred_response", "rationale", "revision", "updated_at"]
    )
    _store_ratings(judgment, assignment, data)
    if data.grades:
        _store_grades(judgment, assignment, data, criteria)
    spans_store(judgment=judgment, shown_order=assignment.shown_order, spans=data.spans)
    JudgmentEdit.objects.create(
        judgment=judgment, editor=editor, reason=reason.strip(), before=before, after=after
    )
    old, new = changed_fields(before, after)
    audit_record(
        action=AuditEvent.Action.JUDGMENT_EDITED,
        actor=editor,
        study_id=assignment.study_id,
        target=f"judgment:{judgment.pk}",
        summary=f"revision {judgment.revision}" + (f": {reason.strip()}" if reason.strip() else ""),
        before=old,
        after=new,
    )
    adjudication_check(study=assignment.study, comparison_id=assignment.comparison_id)
    return judgment, JudgmentOutcome.UPDATED


def _seat_done(assignment: Assignment, rater: User, now: datetime) -> bool:
    """Marks the seat done if it is still this rater's and pending, in one written statement
    (every submit makes it; see ``clinic_eval.sql``)."""
    touched = sql.execute(
        _seat_done_sql(),
        [
            Assignment.Status.DONE,
            connection.ops.adapt_datetimefield_value(now),
            assignment.pk,
            rater.pk,
            Assignment.Status.PENDING,
        ],
    )
    return touched == 1


@cache
def _seat_done_sql() -> str:
    def name(field: str) -> str:
        return sql.column(Assignment, field)

    return (
        f"UPDATE {sql.table(Assignment)} SET {name('status')} = %s, {name('done_at')} = %s, "
        f"{name('leased_until')} = NULL "
        f"WHERE {name('id')} = %s AND {name('rater')} = %s AND {name('status')} = %s"
    )


def _judgment_create(
    assignment: Assignment,
    rater: User,
    data: JudgmentInput,
    criteria: Sequence[RubricCriterion],
) -> Judgment:
    """The first judgment of a seat, written without a prior lock or lookup: the database's
    one-judgment-per-seat constraint refuses a second (``IntegrityError``, and nothing is
    kept), and the seat is marked done only if it is still this rater's and pending."""
    now = timezone.now()
    seconds = None
    if assignment.first_shown_at is not None:
        cap = _lease(assignment.study).total_seconds()
        seconds = min((now - assignment.first_shown_at).total_seconds(), cap)
    with transaction.atomic():
        judgment = sql.create(
            Judgment(
                assignment=assignment,
                study=assignment.study,
                rater=rater,
                preference=data.preference,
                preferred_response_id=_preferred_response(assignment, data.preference),
                rationale=data.rationale,
                seconds_on_item=seconds,
            )
        )
        _store_ratings(judgment, assignment, data, replace=False)
        if data.grades:
            _store_grades(judgment, assignment, data, criteria, replace=False)
        spans_store(
            judgment=judgment, shown_order=assignment.shown_order, spans=data.spans, replace=False
        )
        if not _seat_done(assignment, rater, now):
            raise DomainError(
                "This item is no longer in your queue (a coordinator moved it); nothing was saved."
            )
        adjudication_check(study=assignment.study, comparison_id=assignment.comparison_id)
    return judgment


def judgment_record(
    *,
    assignment: Assignment,
    rater: User,
    data: JudgmentInput,
    revision: int = 0,
    reason: str = "",
) -> tuple[Judgment, JudgmentOutcome]:
    """Store a rater's judgment of an item; returns it with what was done (``JudgmentOutcome``).

    Exactly one judgment per item, whatever arrives: the database holds a one-to-one
    constraint (a first judgment is inserted straight away and a second insert is refused),
    an edit locks the assignment row, and a resubmission identical to what is stored is a
    no-op. A different submission is an edit only when ``revision`` matches the stored one
    (the edit form carries it); otherwise it raises ``StaleJudgment`` and changes nothing.
    Every edit is audited with the old and new values.

    In rubric mode ``data.grades`` must hold a verdict on every criterion of the case's rubric
    for every shown response (``ratings`` stay empty); they are stored as ``CriterionGrade``
    rows and the judgment's preference as ``RUBRIC_PREFERENCE``.
    """
    study = assignment.study
    if study.status != Study.Status.OPEN:
        raise DomainError("This study is no longer open for rating; nothing was changed.")
    positions = len(assignment.shown_order)
    criteria: list[RubricCriterion] = []
    spans, raw_span_errors = spans_checked(
        config=study.rubric_config.spans, shown_order=assignment.shown_order, spans=data.spans
    )
    span_errors = _span_errors(raw_span_errors)
    data = replace(data, spans=tuple(as_input(s) for s in spans))
    if study.is_rubric_mode:
        criteria = selectors.case_criteria(case=assignment.comparison.case)
        errors = {**_grade_errors(study, positions, data, criteria), **span_errors}
        if errors:
            raise JudgmentInvalid(errors)
        data = _normalised_grades(data)
    else:
        data = likert_judgment_checked(
            study, positions, _with_derived_flags(study, data, spans), span_errors
        )
    for _ in range(2):
        try:
            return _judgment_create(assignment, rater, data, criteria), JudgmentOutcome.CREATED
        except IntegrityError:
            pass  # a judgment exists (an edit, a resubmit, or a concurrent first submit)
        with transaction.atomic():
            locked = Assignment.objects.select_for_update().get(pk=assignment.pk, rater=rater)
            existing = Judgment.objects.filter(assignment=locked).first()
            if existing is not None:
                return _judgment_update(
                    existing,
                    locked,
                    data,
                    revision=revision,
                    editor=rater,
                    reason=reason,
                    criteria=criteria,
                )
    raise StaleJudgment("This item was being saved twice at once; reload the page.")
