"""Rubrics drafted by a model arm, and criteria graded by a model arm (HealthBench style).

Both reuse generation's engines: the arm's GenerationSpec names the checkpoint, adapter and
sampling, and ``engines.engine_for`` loads it exactly as a generation shard would. Output is made
parseable by construction where the engine allows it: vLLM decodes under a JSON schema
(structured outputs). The transformers engine generates freely; its output is parsed leniently
and retried with a new seed, and what still fails falls back to an honest, labelled method:
each generated line becomes a draft criterion, and a verdict is the likelier of two answers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

from kombu.exceptions import OperationalError as BrokerError

from alignment_jobs import engines, prompts
from alignment_jobs.generation.jobs import QueueUnavailable
from alignment_jobs.generation.shards import worker_name
from alignment_jobs.generation.specs import spec_check_paths
from alignment_jobs.models import GenerationSpec
from alignment_jobs.rubric_jobs.prompts import (
    RETRY_MIN_TEMPERATURE,
)
from clinic_eval.errors import DomainError
from clinic_eval.models import (
    Arm,
    Study,
)

logger = logging.getLogger(__name__)


ENGINE_CHOICES = ("auto", engines.VLLM, engines.TRANSFORMERS)


GRADE_METHODS = ("auto", "generate", "likelihood")


FROZEN_STATUSES = (Study.Status.OPEN, Study.Status.CLOSED)


def load_engine(spec: GenerationSpec, engine_name: str) -> engines.Engine:
    rank = engines.check_adapter(spec.adapter_path)[1] if spec.adapter_path else 0
    return engines.engine_for(
        name=engines.available_engine(engine_name),
        base=spec.base_model_path,
        dtype=spec.dtype,
        tensor_parallel_size=spec.tensor_parallel_size,
        adapter_rank=rank,
    )


def render_prompt_text(engine: engines.Engine, spec: GenerationSpec, messages: list[dict]) -> str:
    return prompts.render_prompt(
        messages,
        use_chat_template=spec.use_chat_template,
        apply_chat_template=lambda m: engine.tokenizer.apply_chat_template(
            m, tokenize=False, add_generation_prompt=True
        ),
    )


def encode_text(engine: engines.Engine, text: str, max_tokens: int) -> list[int]:
    token_ids = engines.encode_prompt(engine.tokenizer, text)
    room = engine.max_context - max_tokens
    if len(token_ids) > room:
        raise ValueError(
            f"the prompt is {len(token_ids):,} tokens; with max_tokens={max_tokens} the model's "
            f"context of {engine.max_context:,} leaves room for {max(room, 0):,}"
        )
    return token_ids


def supports_structured(engine: engines.Engine) -> bool:
    return isinstance(engine, engines.VllmEngine)


def engine_generate(
    engine: engines.Engine,
    requests: Sequence[engines.EngineRequest],
    sampling: engines.Sampling,
    *,
    adapter_path: str,
    schemas: Sequence[dict[str, Any]] | None = None,
) -> list[tuple[engines.Completion, str]]:
    """One completion per request, and the structured-output backend that constrained it ("")."""
    if schemas is None or not supports_structured(engine):
        outputs = engine.generate(requests, sampling, adapter_path=adapter_path)
        found = [(choices[0], "") for choices in outputs]
    else:
        found = _vllm_structured(engine, requests, sampling, adapter_path, schemas)
    # PostgreSQL text and jsonb refuse NUL, which a model may emit; U+FFFD marks where it was.
    return [
        (replace(completion, text=completion.text.replace("\x00", "\ufffd")), constraint)
        for completion, constraint in found
    ]


def _vllm_structured(
    engine: Any,
    requests: Sequence[engines.EngineRequest],
    sampling: engines.Sampling,
    adapter_path: str,
    schemas: Sequence[dict[str, Any]],
) -> list[tuple[engines.Completion, str]]:
    # VllmEngine.generate has no way to pass a constraint; this is its body plus one. The LoRA
    # ids are shared with it, so an adapter keeps one id in this engine whoever asks for it.
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest
    from vllm.sampling_params import StructuredOutputsParams

    lora = None
    if adapter_path:
        lora_id = engine._lora_ids.setdefault(adapter_path, len(engine._lora_ids) + 1)
        lora = LoRARequest(f"adapter-{lora_id}", lora_id, adapter_path)
    constraints = [StructuredOutputsParams(json=schema) for schema in schemas]
    params = [
        SamplingParams(
            n=1,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            seed=request.seed,
            structured_outputs=constraint,
        )
        for request, constraint in zip(requests, constraints, strict=True)
    ]
    outputs = engine.llm.generate(
        [TokensPrompt(prompt_token_ids=request.token_ids) for request in requests],
        params,
        lora_request=lora,
        use_tqdm=False,
    )
    return [
        (
            engines.Completion(
                text=output.outputs[0].text,
                completion_tokens=len(output.outputs[0].token_ids),
                finish_reason=str(output.outputs[0].finish_reason or "stop"),
            ),
            "json_schema:" + str(param.structured_outputs._backend or "auto"),
        )
        for output, param in zip(outputs, params, strict=True)
    ]


def continuation_logprobs(
    engine: Any, prompt_ids: list[int], continuations: Sequence[str], adapter_path: str
) -> list[float]:
    """log P(continuation | prompt) under the transformers engine's model, summed over tokens."""
    torch = engine.torch
    adapter = engine._select_adapter(adapter_path)
    without_adapter = (
        engine.model.disable_adapter() if engine._adapters and not adapter else nullcontext()
    )
    scores = []
    with without_adapter, torch.inference_mode():
        for text in continuations:
            tail = list(engine.tokenizer(text, add_special_tokens=False)["input_ids"])
            ids = torch.tensor([prompt_ids + tail], device=engine.device)
            logits = engine.model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            picked = logprobs.gather(1, torch.tensor(tail, device=engine.device).unsqueeze(1))
            scores.append(float(picked.sum()))
    return scores


def sampling_for(spec: GenerationSpec, max_tokens: int, attempt: int) -> engines.Sampling:
    temperature = spec.temperature
    if attempt > 1:
        temperature = max(temperature, RETRY_MIN_TEMPERATURE)
    return engines.Sampling(temperature=temperature, top_p=spec.top_p, max_tokens=max_tokens, n=1)


def engine_provenance(spec: GenerationSpec, engine: engines.Engine) -> dict[str, Any]:
    return {
        "arm_id": spec.arm_id,
        "spec_id": spec.pk,
        "engine": engine.name,
        "engine_version": engine.version,
        "base_model_path": spec.base_model_path,
        "base_config_sha256": spec.base_config_sha256,
        "adapter_path": spec.adapter_path,
        "adapter_config_sha256": spec.adapter_config_sha256,
        "dtype": spec.dtype,
        "engine_dtype": engine.dtype,
        "use_chat_template": spec.use_chat_template,
        "spec_template_version": spec.template_version,
        "worker": worker_name(),
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
