from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, cast

from django.conf import settings
from django.db import models, transaction

from alignment_jobs import engines, prompts
from alignment_jobs.models import GenerationSpec
from clinic_eval.audit.services import audit_record
from clinic_eval.errors import DomainError
from clinic_eval.models import Arm, AuditEvent, Study

logger = logging.getLogger(__name__)


PROMPT_FIELDS = (
    "system_prompt",
    "user_template",
    "use_chat_template",
    "few_shot_k",
    "few_shot_pool",
)


GENERATION_FIELDS = (
    *PROMPT_FIELDS,
    "base_model_path",
    "adapter_path",
    "temperature",
    "top_p",
    "max_tokens",
    "n_samples",
    "seed",
    "dtype",
    "tensor_parallel_size",
)


def _path_problem(path: str) -> str | None:
    """Model paths must lie under one of the configured roots: nothing else is ever loaded."""
    resolved = Path(path).resolve()
    roots = [Path(root).resolve() for root in settings.MODEL_ROOTS]
    if any(resolved == root or root in resolved.parents for root in roots):
        return None
    listed = ", ".join(str(root) for root in roots) or "none configured"
    return f"{path}: outside the model directories this server may load from ({listed})"


def spec_check_paths(*, base_model_path: str, adapter_path: str) -> tuple[str, str, int]:
    """The config hashes and LoRA rank of a spec's checkpoint, or a DomainError saying why not."""
    for path in filter(None, (base_model_path, adapter_path)):
        if not Path(path).is_absolute():
            raise DomainError(f"{path!r}: give an absolute path on the worker's disk")
        problem = _path_problem(path)
        if problem:
            raise DomainError(problem)
    try:
        base_hash = engines.check_base_model(base_model_path)
        adapter_hash, rank = engines.check_adapter(adapter_path) if adapter_path else ("", 0)
    except engines.EngineError as exc:
        raise DomainError(str(exc)) from None
    return base_hash, adapter_hash, rank


def _spec_problems(values: dict[str, Any], study: Study) -> list[str]:
    problems = [
        f"user template: {p}" for p in prompts.template_problems(values["user_template"])
    ] + [f"system prompt: {p}" for p in prompts.template_problems(values["system_prompt"])]
    if "{{" in values["system_prompt"]:
        problems.append("system prompt: placeholders belong in the user template")
    if not values["user_template"].strip():
        problems.append("user template: write the prompt, e.g. " + prompts.DEFAULT_USER_TEMPLATE)
    if not 0 <= values["temperature"] <= 5:
        problems.append("temperature must be between 0 and 5")
    if not 0 < values["top_p"] <= 1:
        problems.append("top_p must be above 0 and at most 1")
    if not 1 <= values["max_tokens"] <= 32_768:
        problems.append("max_tokens must be between 1 and 32768")
    if not 1 <= values["n_samples"] <= 16:
        problems.append("n_samples must be between 1 and 16")
    if not 1 <= values["tensor_parallel_size"] <= 16:
        problems.append("tensor_parallel_size must be between 1 and 16")
    if values["dtype"] not in GenerationSpec.Dtype.values:
        problems.append(f"dtype must be one of {', '.join(GenerationSpec.Dtype.values)}")
    pool = values["few_shot_pool"]
    if values["few_shot_k"]:
        if len(pool) <= values["few_shot_k"]:
            problems.append(
                f"few-shot: the pool needs more than k={values['few_shot_k']} cases "
                "(a case is never its own example)"
            )
        known = dict(
            study.cases.filter(external_id__in=pool).values_list("external_id", "ground_truth")
        )
        missing = [case_id for case_id in pool if case_id not in known]
        if missing:
            problems.append(f"few-shot pool: no such case(s) {', '.join(missing[:10])}")
        unanswered = [case_id for case_id, truth in known.items() if not truth]
        if unanswered:
            problems.append(
                f"few-shot pool: case(s) without a ground truth to show as the answer: "
                f"{', '.join(sorted(unanswered)[:10])}"
            )
    return problems


def spec_save(*, arm: Arm, **values: Any) -> GenerationSpec:
    """Create or change an arm's generation spec; paths and templates are checked first."""
    if arm.kind != Arm.Kind.MODEL:
        raise DomainError(f"{arm.label} is not a model arm; only model arms are generated")
    values["few_shot_pool"] = list(dict.fromkeys(values.get("few_shot_pool") or []))
    spec = GenerationSpec.objects.filter(arm=arm).first() or GenerationSpec(arm=arm)
    # GENERATION_FIELDS are the spec's own columns, never relations.
    defaults = {
        name: cast(models.Field, spec._meta.get_field(name)).get_default()
        for name in GENERATION_FIELDS
    }
    merged = {
        name: values.get(name, getattr(spec, name) if spec.pk else defaults[name])
        for name in GENERATION_FIELDS
    }
    problems = _spec_problems(merged, arm.study)
    if problems:
        raise DomainError("; ".join(problems))
    base_hash, adapter_hash, _ = spec_check_paths(
        base_model_path=merged["base_model_path"], adapter_path=merged["adapter_path"]
    )
    changed = [name for name in GENERATION_FIELDS if getattr(spec, name) != merged[name]]
    if spec.pk and changed:
        generated = arm.responses.count()
        if generated:
            raise DomainError(
                f"{generated} response(s) of {arm.label} were generated with the current "
                "settings; add a new arm to try different ones"
            )
    with transaction.atomic():
        if spec.pk and any(name in PROMPT_FIELDS for name in changed):
            spec.template_version += 1
        created = spec.pk is None
        old = {name: getattr(spec, name) for name in changed}
        for name, value in merged.items():
            setattr(spec, name, value)
        spec.base_config_sha256 = base_hash
        spec.adapter_config_sha256 = adapter_hash
        spec.full_clean()
        spec.save()
        if created or changed:
            audit_record(
                action=AuditEvent.Action.SPEC_SAVED,
                study_id=arm.study_id,
                target=f"arm:{arm.pk}",
                summary=f"{arm.label}: " + ("created" if created else ", ".join(changed)),
                before=None if created else _jsonable(old),
                after=_jsonable({name: merged[name] for name in changed}),
            )
    return spec


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(values, default=str))
