from alignment_jobs.engines.base import (
    ENGINE_NAMES,
    TRANSFORMERS,
    VLLM,
    Completion,
    Engine,
    EngineError,
    EngineRequest,
    JsonSchema,
    Sampling,
    available_engine,
    check_adapter,
    check_base_model,
    encode_prompt,
)
from alignment_jobs.engines.registry import engine_discard, engine_for
from alignment_jobs.engines.transformers_engine import TransformersEngine
from alignment_jobs.engines.vllm_engine import VllmEngine, lora_rank_for

__all__ = [
    "Completion",
    "ENGINE_NAMES",
    "Engine",
    "EngineError",
    "EngineRequest",
    "JsonSchema",
    "Sampling",
    "TRANSFORMERS",
    "TransformersEngine",
    "VLLM",
    "VllmEngine",
    "available_engine",
    "check_adapter",
    "check_base_model",
    "encode_prompt",
    "engine_discard",
    "engine_for",
    "lora_rank_for",
]
