from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.conf import settings

from alignment_jobs import engines, prompts
from alignment_jobs.generation.jobs import broker_check
from alignment_jobs.generation.spec_engine import prompt_encode, prompt_render, spec_engine
from alignment_jobs.models import GenerationSpec
from alignment_jobs.rubric_jobs.drafting import Attempts
from alignment_jobs.rubric_jobs.engine_use import (
    GRADE_METHODS,
    RubricLaunch,
    arm_model_spec,
    attempt_seed,
    check_engine_name,
    engine_generate,
    engine_provenance,
    rubric_work_launch,
    sampling_for,
    sampling_record,
)
from alignment_jobs.rubric_jobs.prompts import (
    GRADE_TEMPLATE_SHA256,
    MAX_ERROR_CHARS,
    MAX_KEPT_OUTPUT_CHARS,
    UnparseableOutput,
    grade_messages,
    parse_verdicts,
    verdict_schema,
)
from clinic_eval.errors import DomainError
from clinic_eval.models import (
    Arm,
    CaseRubric,
    GraderVerdict,
    Response,
    RubricCriterion,
    Study,
    User,
)
from clinic_eval.rubrics import selectors
from clinic_eval.rubrics.selectors import rubric_is_usable

logger = logging.getLogger(__name__)


def gradable_responses(study: Study) -> dict[int, CaseRubric]:
    """Responses (pk -> rubric) whose case's rubric is usable; excluded responses are left out.

    A case's own rubric hides its stratum's, usable or not, as in the rubric-mode design.
    """
    by_case, by_stratum = selectors.rubrics_by_scope(study=study)
    found: dict[int, CaseRubric] = {}
    responses = (
        Response.objects.filter(case__study=study)
        .exclude(review=Response.Review.EXCLUDED)
        .values_list("pk", "case_id", "case__stratum")
        .order_by("case__external_id", "arm__label", "sample_index")
    )
    for pk, case_id, stratum in responses:
        rubric = by_case[case_id] if case_id in by_case else by_stratum.get(stratum)
        if rubric is not None and rubric.usable:  # type: ignore[attr-defined]
            found[pk] = rubric
    return found


def _ungraded(grader: Arm, found: dict[int, CaseRubric]) -> list[int]:
    criteria_counts = {rubric.pk: rubric.criteria.count() for rubric in found.values()}
    stored: dict[int, int] = {}
    for response_id in GraderVerdict.objects.filter(
        grader=grader, response_id__in=list(found)
    ).values_list("response_id", flat=True):
        stored[response_id] = stored.get(response_id, 0) + 1
    return [pk for pk, rubric in found.items() if stored.get(pk, 0) < criteria_counts[rubric.pk]]


def rubric_grade_launch(
    *,
    study: Study,
    grader_arm: Arm,
    created_by: User | None,
    engine: str = "auto",
    method: str = "auto",
) -> RubricLaunch:
    """Queue grading by ``grader_arm`` of every response whose case has a usable rubric.

    Criteria already graded by this grader are skipped, here and again by the worker.
    """
    check_engine_name(engine)
    if method not in GRADE_METHODS:
        raise DomainError(f"method must be one of {', '.join(GRADE_METHODS)}")
    arm_model_spec(grader_arm, study, "grade")
    found = gradable_responses(study)
    if not found:
        raise DomainError(
            "nothing to grade: no response's case has a rubric verified by enough physicians"
        )
    todo = _ungraded(grader_arm, found)
    if not todo:
        raise DomainError(f"{grader_arm.label} has already graded every verified criterion")
    broker_check(what="no grading was queued")
    from alignment_jobs.rubric_jobs.tasks import rubric_grade_task

    return rubric_work_launch(
        task=rubric_grade_task,
        todo=todo,
        task_arguments=lambda chunk: (grader_arm.pk, chunk, engine, method),
        created_by=created_by,
        study=study,
        target=f"rubric_grade:arm:{grader_arm.pk}",
        summary=f"criterion grading by {grader_arm.label} of {len(todo)} response(s)",
        after={"kind": "rubric_grade", "arm_id": grader_arm.pk, "response_ids": todo},
    )


@dataclass
class GradeOutcome:
    stored: int = 0
    unparseable: int = 0
    skipped: int = 0  # responses with nothing left to grade, or no usable rubric any more
    errors: list[str] = field(default_factory=list)
    engine_seconds: float = 0.0


@dataclass
class _GradeItem:
    response: Response
    rubric: CaseRubric
    criteria: list[RubricCriterion]
    token_ids: list[int]
    prompt_text: str
    attempts: Attempts = field(default_factory=Attempts)
    verdicts: dict[int, tuple[bool, int]] = field(default_factory=dict)  # number -> (met, try)
    likelihood: dict[int, dict[str, float]] = field(default_factory=dict)


def _grade_items(
    grader: Arm, response_ids: Sequence[int], study: Study, outcome: GradeOutcome
) -> list[tuple[Response, CaseRubric, list[RubricCriterion]]]:
    found = []
    responses = Response.objects.filter(pk__in=response_ids, case__study=study).select_related(
        "case"
    )
    done = set(
        GraderVerdict.objects.filter(grader=grader, response_id__in=response_ids).values_list(
            "response_id", "criterion_id"
        )
    )
    for response in responses.order_by("case__external_id", "pk"):
        rubric = selectors.case_rubric(case=response.case)
        if (
            rubric is None
            or response.review == Response.Review.EXCLUDED
            or not rubric_is_usable(rubric=rubric)
        ):
            outcome.skipped += 1
            continue
        criteria = [c for c in rubric.criteria.all() if (response.pk, c.pk) not in done]
        if not criteria:
            outcome.skipped += 1
            continue
        found.append((response, rubric, criteria))
    return found


def rubric_grade_run(
    *, grader_arm_id: int, response_ids: Sequence[int], engine: str = "auto", method: str = "auto"
) -> GradeOutcome:
    """Grade each response's ungraded criteria; store one GraderVerdict per criterion. Safe to
    repeat: existing verdicts are skipped and inserts ignore conflicts.

    ``auto``: JSON-schema decoding on vLLM; on transformers, free generation parsed with retries,
    then, for criteria still without a verdict, the likelier of the two answers. ``generate``:
    free generation only (met=None when unparseable). ``likelihood``: transformers only.
    """
    outcome = GradeOutcome()
    spec = GenerationSpec.objects.select_related("arm__study").filter(arm_id=grader_arm_id).first()
    if spec is None:
        outcome.errors.append("the grader has no generation settings")
        return outcome
    grader, study = spec.arm, spec.arm.study
    targets = _grade_items(grader, response_ids, study, outcome)
    if not targets:
        return outcome
    try:
        loaded = spec_engine(spec, engine_name=engine)
    except engines.EngineError as exc:
        outcome.errors.append(str(exc))
        return outcome
    max_tokens = spec.max_tokens
    items = []
    for response, rubric, criteria in targets:
        text = prompt_render(
            loaded, spec, grade_messages(response.case, response.display_text, criteria)
        )
        try:
            token_ids = prompt_encode(loaded, text, max_tokens=max_tokens)
        except ValueError as exc:
            outcome.errors.append(f"response {response.pk}: {exc}")
            continue
        items.append(_GradeItem(response, rubric, criteria, token_ids, text))

    structured = loaded.supports_json_schema
    use_likelihood = method == "likelihood" or (method == "auto" and not structured)
    if method == "likelihood" and structured:
        outcome.errors.append("likelihood grading is implemented for the transformers engine only")
        return outcome
    sampling = sampling_for(spec, max_tokens, 1)
    if method != "likelihood":
        for attempt in range(1, settings.GENERATION_MAX_ATTEMPTS + 1):
            pending = [item for item in items if len(item.verdicts) < len(item.criteria)]
            if not pending:
                break
            sampling = sampling_for(spec, max_tokens, attempt)
            requests = [
                engines.EngineRequest(
                    token_ids=item.token_ids,
                    seed=attempt_seed(spec, f"grade:{item.response.pk}", attempt),
                )
                for item in pending
            ]
            schemas = None
            if structured and method == "auto":
                # Only the criteria still missing are asked for again, under their prompt numbers.
                schemas = [verdict_schema(len(item.criteria)) for item in pending]
            started = time.perf_counter()
            try:
                completions = engine_generate(
                    loaded, requests, sampling, adapter_path=spec.adapter_path, schemas=schemas
                )
            except Exception as exc:
                logger.warning("grading failed in the engine: %s", exc)
                engines.engine_discard(loaded)
                outcome.errors.append(f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
                return outcome
            outcome.engine_seconds += time.perf_counter() - started
            for item, request, (completion, constraint) in zip(
                pending, requests, completions, strict=True
            ):
                item.attempts.outputs.append(completion.text)
                item.attempts.seeds.append(request.seed)
                item.attempts.finish_reasons.append(completion.finish_reason)
                item.attempts.constraint = constraint
                try:
                    found = parse_verdicts(completion.text, len(item.criteria))
                except UnparseableOutput as exc:
                    item.attempts.errors.append(f"attempt {attempt}: {exc}")
                    continue
                for number, verdict in found.items():
                    item.verdicts.setdefault(number, (verdict, attempt))
                missing = len(item.criteria) - len(item.verdicts)
                if missing:
                    item.attempts.errors.append(f"attempt {attempt}: {missing} criteria missing")

    if use_likelihood and not structured:
        started = time.perf_counter()
        for item in items:
            for number in range(1, len(item.criteria) + 1):
                if number in item.verdicts:
                    continue
                yes, no = loaded.continuation_logprobs(
                    item.token_ids,
                    [json.dumps({str(number): True}), json.dumps({str(number): False})],
                    adapter_path=spec.adapter_path,
                )
                item.likelihood[number] = {"logprob_met": yes, "logprob_not_met": no}
        outcome.engine_seconds += time.perf_counter() - started

    base = engine_provenance(spec, loaded)
    rows = []
    for item in items:
        for number, criterion in enumerate(item.criteria, 1):
            provenance = {
                **base,
                "source": "rubric_grade",
                "rubric_id": item.rubric.pk,
                "rubric_version": item.rubric.version,
                "criterion_number": number,
                "criterion_points": criterion.points,
                "sampling": sampling_record(sampling, spec),
                "template_sha256": GRADE_TEMPLATE_SHA256,
                "prompt_sha256": prompts.sha256_text(item.prompt_text),
                "prompt_tokens": len(item.token_ids),
                "constraint": item.attempts.constraint or "none",
                "seeds": item.attempts.seeds,
                "parse_errors": item.attempts.errors,
            }
            raw = item.attempts.outputs[-1] if item.attempts.outputs else ""
            error = ""
            met: bool | None
            if number in item.verdicts:
                met, used = item.verdicts[number]
                raw = item.attempts.outputs[used - 1]
                provenance.update(
                    method="structured" if item.attempts.constraint else "generate",
                    seed=item.attempts.seeds[used - 1],
                    attempt_used=used,
                )
            elif number in item.likelihood:
                scores = item.likelihood[number]
                met = scores["logprob_met"] > scores["logprob_not_met"]
                provenance.update(method="likelihood", **scores)
            else:
                met = None
                provenance.update(method="generate")
                error = (
                    f"no parseable verdict after {len(item.attempts.outputs)} attempt(s): "
                    + "; ".join(item.attempts.errors[-3:])
                )[:MAX_ERROR_CHARS]
            rows.append(
                GraderVerdict(
                    grader=grader,
                    response=item.response,
                    criterion=criterion,
                    met=met,
                    raw_output=raw[:MAX_KEPT_OUTPUT_CHARS],
                    attempts=len(item.attempts.outputs),
                    error=error,
                    provenance={**provenance, "attempts": len(item.attempts.outputs)},
                )
            )
    stored = GraderVerdict.objects.filter(grader=grader, response_id__in=response_ids)
    before = stored.count()
    # ignore_conflicts: a concurrent delivery may have stored some of these already.
    GraderVerdict.objects.bulk_create(rows, ignore_conflicts=True)
    outcome.stored = stored.count() - before
    outcome.unparseable = sum(row.met is None for row in rows)
    return outcome
