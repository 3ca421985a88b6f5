"""Rubrics drafted by a model arm, and criteria graded by a model arm (HealthBench style).

Both reuse generation's engines: the arm's GenerationSpec names the checkpoint, adapter and
sampling, and ``spec_engine.spec_engine`` loads it exactly as a generation shard does. Output
is made parseable by construction where the engine allows it: vLLM decodes under a JSON schema
(structured outputs). The transformers engine generates freely; its output is parsed leniently
and retried with a new seed, and what still fails falls back to an honest, labelled method:
each generated line becomes a draft criterion, and a verdict is the likelier of two answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from django.conf import settings
from django.db import transaction
from kombu.exceptions import OperationalError as BrokerError

from alignment_jobs import engines, prompts
from alignment_jobs.generation.jobs import QueueUnavailable
from alignment_jobs.generation.spec_engine import spec_provenance
from alignment_jobs.generation.specs import spec_check_paths
from alignment_jobs.models import GenerationSpec
from alignment_jobs.rubric_jobs.prompts import (
    RETRY_MIN_TEMPERATURE,
)
from clinic_eval.audit.services import audit_record
from clinic_eval.errors import DomainError
from clinic_eval.models import Arm, AuditEvent, Study, User

logger = logging.getLogger(__name__)


ENGINE_CHOICES = ("auto", engines.VLLM, engines.TRANSFORMERS)


GRADE_METHODS = ("auto", "generate", "likelihood")


def engine_generate(
    engine: engines.Engine,
    requests: Sequence[engines.EngineRequest],
    sampling: engines.Sampling,
    *,
    adapter_path: str,
    schemas: Sequence[dict[str, Any]] | None = None,
) -> list[tuple[engines.Completion, str]]:
    """One completion per request, and the structured-output backend that constrained it ("").

    ``schemas`` (one per request) constrain the output where the engine can decode under a
    JSON schema; elsewhere the engine generates freely.
    """
    outputs = engine.generate(
        requests,
        sampling,
        adapter_path=adapter_path,
        json_schema=schemas if engine.supports_json_schema else None,
    )
    found = [choices[0] for choices in outputs]
    # PostgreSQL text and jsonb refuse NUL, which a model may emit; U+FFFD marks where it was.
    return [(replace(c, text=c.text.replace("\x00", "\ufffd")), c.constraint) for c in found]


def sampling_for(spec: GenerationSpec, max_tokens: int, attempt: int) -> engines.Sampling:
    temperature = spec.temperature
    if attempt > 1:
        temperature = max(temperature, RETRY_MIN_TEMPERATURE)
    return engines.Sampling(temperature=temperature, top_p=spec.top_p, max_tokens=max_tokens, n=1)


def engine_provenance(spec: GenerationSpec, engine: engines.Engine) -> dict[str, Any]:
    return {
        "arm_id": spec.arm_id,
        **spec_provenance(spec, engine),
        "spec_template_version": spec.template_version,
    }


def sampling_record(sampling: engines.Sampling, spec: GenerationSpec) -> dict[str, Any]:
    return {
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_tokens,
        "spec_seed": spec.seed,
    }


def attempt_seed(spec: GenerationSpec, key: str, attempt: int) -> int:
    return prompts.request_seed(spec.seed, f"{key}#attempt{attempt}")


def arm_model_spec(arm: Arm, study: Study, role: str) -> GenerationSpec:
    if arm.study_id != study.pk:
        raise DomainError(f"{arm.label} belongs to another study")
    if arm.kind != Arm.Kind.MODEL:
        raise DomainError(f"{arm.label} is not a model arm; only a model can {role}")
    spec = GenerationSpec.objects.filter(arm=arm).select_related("arm__study").first()
    if spec is None:
        raise DomainError(f"{arm.label} has no generation settings yet")
    try:
        spec_check_paths(base_model_path=spec.base_model_path, adapter_path=spec.adapter_path)
    except DomainError as exc:
        raise DomainError(f"{arm.label}: {exc}") from None
    return spec


def check_engine_name(engine: str) -> None:
    if engine not in ENGINE_CHOICES:
        raise DomainError(f"engine must be one of {', '.join(ENGINE_CHOICES)}")


@dataclass(frozen=True)
class RubricLaunch:
    items: int  # cases to draft, or responses to grade
    tasks: int


def publish_tasks(task: Any, argument_lists: list[tuple]) -> None:
    try:
        for arguments in argument_lists:
            task.delay(*arguments)
    except (BrokerError, OSError) as exc:
        # Nothing to undo: a task that did go out finds its work still wanted and does it.
        logger.warning("broker unreachable while queueing %s: %s", task.name, exc)
        raise QueueUnavailable(
            "The job queue is unreachable, so some of the work was not queued. Check that the "
            "queue service is running, then launch again: work already done is skipped."
        ) from exc


def chunked(values: Sequence[int], size: int) -> list[list[int]]:
    return [list(values[start : start + size]) for start in range(0, len(values), size)]


def rubric_work_launch(
    *,
    task: Any,
    todo: list[int],
    task_arguments: Callable[[list[int]], tuple[Any, ...]],
    created_by: User | None,
    study: Study,
    target: str,
    summary: str,
    after: dict[str, Any],
) -> RubricLaunch:
    """Audit the launch and queue ``todo`` in chunks once the transaction commits."""
    chunks = chunked(todo, settings.GENERATION_SHARD_SIZE)
    with transaction.atomic():
        audit_record(
            action=AuditEvent.Action.JOB_LAUNCHED,
            actor=created_by,
            study_id=study.pk,
            target=target,
            summary=summary,
            after=after,
        )
        argument_lists = [task_arguments(chunk) for chunk in chunks]
        transaction.on_commit(lambda: publish_tasks(task, argument_lists))
    return RubricLaunch(items=len(todo), tasks=len(chunks))
