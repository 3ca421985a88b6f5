from __future__ import annotations

import gc
import importlib.util
import threading
from collections import OrderedDict

from django.conf import settings

from alignment_jobs.engines.base import VLLM, Engine, EngineError
from alignment_jobs.engines.transformers_engine import TransformersEngine
from alignment_jobs.engines.vllm_engine import VllmEngine, lora_rank_for

# (engine name, base model path, dtype, tensor parallel size)
EngineKey = tuple[str, str, str, int]

_engines: OrderedDict[EngineKey, VllmEngine | TransformersEngine] = OrderedDict()
_engines_lock = threading.Lock()


def engine_for(
    *, name: str, base: str, dtype: str, tensor_parallel_size: int, adapter_rank: int = 0
) -> Engine:
    """The loaded engine for this base model, building it (and evicting the oldest) if needed."""
    key: EngineKey = (name, base, dtype, tensor_parallel_size)
    with _engines_lock:
        engine = _engines.get(key)
        needs_lora = (
            name == VLLM
            and adapter_rank
            and (not isinstance(engine, VllmEngine) or engine.lora_rank < adapter_rank)
        )
        if engine is not None and not needs_lora:
            _engines.move_to_end(key)
            return engine
        if engine is not None:
            _evict(key)
        while len(_engines) >= settings.GENERATION_ENGINE_CACHE_SIZE:
            _evict(next(iter(_engines)))
        loaded: VllmEngine | TransformersEngine
        try:
            if name == VLLM:
                loaded = VllmEngine(
                    base=base,
                    dtype=dtype,
                    tensor_parallel_size=tensor_parallel_size,
                    lora_rank=lora_rank_for(adapter_rank) if adapter_rank else 0,
                )
            else:
                loaded = TransformersEngine(base=base, dtype=dtype)
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(f"could not load {base} with {name}: {exc}") from exc
        _engines[key] = loaded
        return loaded


def engine_discard(engine: Engine) -> None:
    """Drop an engine that raised: its scheduler may hold requests that never finish."""
    with _engines_lock:
        for key, cached in list(_engines.items()):
            if cached is engine:
                _evict(key)


def _evict(key: EngineKey) -> None:
    engine = _engines.pop(key)
    engine.close()
    gc.collect()
    if importlib.util.find_spec("torch"):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
