"""A GenerationSpec on a loaded engine: what generation shards and rubric jobs both need.

The engine for a spec, a case as prompt data, the prompt rendered and encoded with the
context-length check, and the provenance every stored output carries about spec and engine.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from alignment_jobs import engines, prompts
from alignment_jobs.models import GenerationSpec
from clinic_eval.models import Case


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def case_data(case: Case) -> prompts.CaseData:
    return prompts.CaseData(
        id=case.pk,
        external_id=case.external_id,
        stratum=case.stratum,
        narrative=case.narrative,
        fields=case.fields,
        ground_truth=case.ground_truth,
    )


def spec_engine(
    spec: GenerationSpec, *, engine_name: str, adapter_rank: int | None = None
) -> engines.Engine:
    """The loaded engine for the spec's base model; LoRA slots for ``adapter_rank``, or for the
    spec's own adapter when it is None. Raises EngineError."""
    if adapter_rank is None:
        adapter_rank = engines.check_adapter(spec.adapter_path)[1] if spec.adapter_path else 0
    return engines.engine_for(
        name=engines.available_engine(engine_name),
        base=spec.base_model_path,
        dtype=spec.dtype,
        tensor_parallel_size=spec.tensor_parallel_size,
        adapter_rank=adapter_rank,
    )


def prompt_render(
    engine: engines.Engine, spec: GenerationSpec, messages: Sequence[Mapping[str, str]]
) -> str:
    return prompts.render_prompt(
        messages, use_chat_template=spec.use_chat_template, apply_chat_template=engine.render_chat
    )


def prompt_encode(engine: engines.Engine, text: str, *, max_tokens: int) -> list[int]:
    """The prompt's token ids; a ValueError saying so when it leaves no room for max_tokens."""
    token_ids = engine.encode(text)
    room = engine.max_context - max_tokens
    if len(token_ids) > room:
        raise ValueError(
            f"the prompt is {len(token_ids):,} tokens; with max_tokens={max_tokens} the model's "
            f"context of {engine.max_context:,} leaves room for {max(room, 0):,}"
        )
    return token_ids


def spec_provenance(spec: GenerationSpec, engine: engines.Engine) -> dict[str, Any]:
    return {
        "spec_id": spec.pk,
        **engine.provenance(),
        "base_model_path": spec.base_model_path,
        "base_config_sha256": spec.base_config_sha256,
        "adapter_path": spec.adapter_path,
        "adapter_config_sha256": spec.adapter_config_sha256,
        "dtype": spec.dtype,
        "use_chat_template": spec.use_chat_template,
        "worker": worker_name(),
    }
