from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, transaction

from alignment_jobs import engines, prompts
from alignment_jobs.generation.jobs import broker_check
from alignment_jobs.generation.spec_engine import prompt_encode, prompt_render, spec_engine
from alignment_jobs.models import GenerationSpec
from alignment_jobs.rubric_jobs.engine_use import (
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
    DRAFT_TEMPLATE_SHA256,
    MAX_ERROR_CHARS,
    MAX_KEPT_OUTPUT_CHARS,
    DraftParse,
    UnparseableOutput,
    draft_messages,
    draft_schema,
    parse_draft,
    parse_draft_lines,
)
from clinic_eval.errors import DomainError
from clinic_eval.models import (
    Arm,
    Case,
    CaseRubric,
    Study,
    User,
)
from clinic_eval.rubrics.services import rubric_store

logger = logging.getLogger(__name__)


def _replaceable(rubric: CaseRubric) -> bool:
    """A draft nobody has touched: no verification, no edit by a person, no grade."""
    return (
        rubric.source == CaseRubric.Source.DRAFTED
        and not rubric.verifications.exists()
        and not rubric.changes.exists()
        and not rubric.criteria.filter(grades__isnull=False).exists()
    )


def _cases_to_draft(study: Study, case_pks: Sequence[int], replace: bool) -> list[Case]:
    strata_with_rubric = set(
        CaseRubric.objects.filter(study=study, case__isnull=True).values_list("stratum", flat=True)
    )
    rubrics = {
        rubric.case_id: rubric
        for rubric in CaseRubric.objects.filter(study=study, case_id__in=case_pks)
    }
    todo = []
    for case in Case.objects.filter(study=study, pk__in=case_pks).order_by("external_id"):
        rubric = rubrics.get(case.pk)
        if rubric is None:
            wanted = case.stratum not in strata_with_rubric
        else:
            wanted = replace and _replaceable(rubric)
        if wanted:
            todo.append(case)
    return todo


def rubric_draft_launch(
    *,
    study: Study,
    arm: Arm,
    created_by: User | None,
    case_ids: Sequence[str] | None = None,
    replace: bool = False,
    engine: str = "auto",
    max_tokens: int | None = None,
) -> RubricLaunch:
    """Queue drafting by ``arm`` for the cases (external ids) that have no rubric.

    With ``replace``, an untouched draft (no verification, edit or grade) is drafted again.
    Cases covered by a stratum rubric are left alone. Raises QueueUnavailable when the broker
    is down, before anything is queued.
    """
    if study.is_frozen:
        raise DomainError("the study is open or closed; its rubrics are frozen")
    check_engine_name(engine)
    if max_tokens is not None and not 1 <= max_tokens <= 32_768:
        raise DomainError("max_tokens must be between 1 and 32768")
    arm_model_spec(arm, study, "draft rubrics")
    cases = study.cases.all()
    if case_ids is not None:
        wanted = list(dict.fromkeys(case_ids))
        cases = cases.filter(external_id__in=wanted)
        unknown = sorted(set(wanted) - set(cases.values_list("external_id", flat=True)))
        if unknown:
            raise DomainError(f"no such case(s) in this study: {', '.join(unknown[:10])}")
    todo = [
        case.pk
        for case in _cases_to_draft(study, list(cases.values_list("pk", flat=True)), replace)
    ]
    if not todo:
        raise DomainError(
            "nothing to draft: every chosen case has a rubric"
            + ("" if replace else " (tick “replace” to redraft untouched drafts)")
        )
    broker_check(what="no drafting was queued")
    from alignment_jobs.rubric_jobs.tasks import rubric_draft_task

    return rubric_work_launch(
        task=rubric_draft_task,
        todo=todo,
        task_arguments=lambda chunk: (arm.pk, chunk, replace, engine, max_tokens),
        created_by=created_by,
        study=study,
        target=f"rubric_draft:arm:{arm.pk}",
        summary=f"rubric drafting by {arm.label} for {len(todo)} case(s)",
        after={"kind": "rubric_draft", "arm_id": arm.pk, "case_ids": todo, "replace": replace},
    )


@dataclass
class DraftOutcome:
    drafted: list[int] = field(default_factory=list)  # case pks
    skipped: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # case pk -> why
    engine_seconds: float = 0.0


@dataclass
class Attempts:
    outputs: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    constraint: str = ""


def rubric_draft_run(
    *,
    arm_id: int,
    case_ids: Sequence[int],
    replace: bool = False,
    engine: str = "auto",
    max_tokens: int | None = None,
) -> DraftOutcome:
    """Draft and store a rubric for each case (pk) that still needs one. Safe to repeat.

    Each case gets up to GENERATION_MAX_ATTEMPTS generations, each with its own seed, until one
    parses; free-generated output that never parses is stored line by line, flagged so.
    """
    outcome = DraftOutcome()
    spec = GenerationSpec.objects.select_related("arm__study").filter(arm_id=arm_id).first()
    if spec is None:
        outcome.failed = {pk: "the arm has no generation settings" for pk in case_ids}
        return outcome
    study = spec.arm.study
    cases = _cases_to_draft(study, case_ids, replace)
    outcome.skipped = sorted(set(case_ids) - {case.pk for case in cases})
    if not cases:
        return outcome
    try:
        loaded = spec_engine(spec, engine_name=engine)
    except engines.EngineError as exc:
        outcome.failed = {case.pk: str(exc) for case in cases}
        return outcome
    max_tokens = max_tokens or spec.max_tokens
    structured = loaded.supports_json_schema
    prompts_by_case: dict[int, tuple[list[int], str]] = {}
    for case in cases:
        text = prompt_render(loaded, spec, draft_messages(case, study.decision_layers))
        try:
            prompts_by_case[case.pk] = (prompt_encode(loaded, text, max_tokens=max_tokens), text)
        except ValueError as exc:
            outcome.failed[case.pk] = str(exc)
    history = {pk: Attempts() for pk in prompts_by_case}
    parsed: dict[int, DraftParse] = {}
    sampling = sampling_for(spec, max_tokens, 1)
    for attempt in range(1, settings.GENERATION_MAX_ATTEMPTS + 1):
        pending = [case for case in cases if case.pk in history and case.pk not in parsed]
        if not pending:
            break
        sampling = sampling_for(spec, max_tokens, attempt)
        requests = [
            engines.EngineRequest(
                token_ids=prompts_by_case[case.pk][0],
                seed=attempt_seed(spec, f"draft:{case.external_id}", attempt),
            )
            for case in pending
        ]
        started = time.perf_counter()
        try:
            completions = engine_generate(
                loaded,
                requests,
                sampling,
                adapter_path=spec.adapter_path,
                schemas=[draft_schema()] * len(requests) if structured else None,
            )
        except Exception as exc:  # the engine raised: the next delivery or launch tries again
            logger.warning("rubric drafting failed in the engine: %s", exc)
            engines.engine_discard(loaded)
            for case in pending:
                outcome.failed[case.pk] = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
            break
        outcome.engine_seconds += time.perf_counter() - started
        for case, request, (completion, constraint) in zip(
            pending, requests, completions, strict=True
        ):
            attempts = history[case.pk]
            attempts.outputs.append(completion.text)
            attempts.seeds.append(request.seed)
            attempts.finish_reasons.append(completion.finish_reason)
            attempts.constraint = constraint
            try:
                parsed[case.pk] = parse_draft(completion.text)
            except UnparseableOutput as exc:
                attempts.errors.append(str(exc))

    base = engine_provenance(spec, loaded)
    for case in cases:
        record = history.get(case.pk)
        if record is None or not record.outputs or case.pk in outcome.failed:
            continue
        result = parsed.get(case.pk)
        if result is None and not structured:
            try:
                result = parse_draft_lines(record.outputs[-1])
            except UnparseableOutput as exc:
                record.errors.append(str(exc))
        if result is None:
            outcome.failed[case.pk] = (
                f"no usable rubric after {len(record.outputs)} attempt(s): "
                + "; ".join(dict.fromkeys(record.errors))
            )[:MAX_ERROR_CHARS]
            continue
        used = len(record.outputs) - 1 if result.parsed == "lines" else len(record.errors)
        provenance = {
            **base,
            "source": "rubric_draft",
            "sampling": sampling_record(sampling, spec),
            "template_sha256": DRAFT_TEMPLATE_SHA256,
            "prompt_sha256": prompts.sha256_text(prompts_by_case[case.pk][1]),
            "prompt_tokens": len(prompts_by_case[case.pk][0]),
            "seed": record.seeds[used],
            "attempts": len(record.outputs),
            "parsed": result.parsed,
            "constraint": record.constraint or "none",
            "finish_reason": record.finish_reasons[used],
            "raw_output": record.outputs[used][:MAX_KEPT_OUTPUT_CHARS],
            "failed_outputs": [text[:MAX_KEPT_OUTPUT_CHARS] for text in record.outputs[:used]],
            "parse_errors": record.errors,
            "dropped_items": result.dropped,
            "axis_defaulted": result.axis_defaulted,
        }
        try:
            with transaction.atomic():
                Case.objects.select_for_update().get(pk=case.pk)
                # Another delivery (or a physician) may have written one since we looked.
                if not _cases_to_draft(study, [case.pk], replace):
                    outcome.skipped.append(case.pk)
                    continue
                rubric_store(
                    study=study,
                    criteria=result.criteria,
                    source=CaseRubric.Source.DRAFTED,
                    case=case,
                    drafted_by=spec.arm,
                    provenance=provenance,
                )
        except (DomainError, IntegrityError) as exc:
            outcome.failed[case.pk] = f"not stored: {exc}"[:MAX_ERROR_CHARS]
            continue
        outcome.drafted.append(case.pk)
    for pk, error in outcome.failed.items():
        logger.warning("rubric draft for case %s by arm %s failed: %s", pk, arm_id, error)
    return outcome
