from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from django.conf import settings

from alignment_jobs.engines.base import (
    TRANSFORMERS,
    Completion,
    EngineError,
    EngineRequest,
    JsonSchema,
    Sampling,
    encode_prompt,
)


class TransformersEngine:
    name = TRANSFORMERS
    # transformers has no constrained decoding here: callers parse free text instead.
    supports_json_schema = False

    def __init__(self, *, base: str, dtype: str):
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.version = transformers.__version__
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(base)
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype).to(self.device)
        self.model.eval()
        self.dtype = str(self.model.dtype).removeprefix("torch.")
        config = self.model.config
        self.max_context = int(getattr(config, "max_position_embeddings", 0) or 4096)
        # Stop where vLLM stops: on any end-of-sequence id of the checkpoint's generation config.
        configured = self.model.generation_config.eos_token_id
        if configured is None:
            configured = self.tokenizer.eos_token_id
        self.eos_ids = [configured] if isinstance(configured, int) else list(configured)
        self._adapters: dict[str, str] = {}

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
        """Make the LoRA adapter at ``adapter_path`` the active one (loaded on first use); its
        name, or "" for the base model."""
        if not adapter_path:
            return ""
        from peft import PeftModel

        name = self._adapters.get(adapter_path)
        if name is None:
            name = f"adapter_{len(self._adapters) + 1}"
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(adapter_path, adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, adapter_path, adapter_name=name)
                self.model.eval()
            self._adapters[adapter_path] = name
        self.model.set_adapter(name)
        return name

    @contextmanager
    def _weights_for(self, adapter_path: str) -> Iterator[None]:
        """The adapter's weights, or the bare base even where adapters are loaded."""
        adapter = self.select_adapter(adapter_path)
        uses_adapters = bool(self._adapters)
        with self.model.disable_adapter() if uses_adapters and not adapter else nullcontext():
            yield

    def generate(
        self,
        requests: Sequence[EngineRequest],
        sampling: Sampling,
        *,
        adapter_path: str = "",
        json_schema: JsonSchema | Sequence[JsonSchema] | None = None,
    ) -> list[list[Completion]]:
        if json_schema is not None:
            raise EngineError("the transformers engine cannot decode under a JSON schema")
        batch_size = settings.TRANSFORMERS_BATCH_SIZE
        results: list[list[Completion]] = []
        with self._weights_for(adapter_path):
            for start in range(0, len(requests), batch_size):
                results.extend(self._generate_batch(requests[start : start + batch_size], sampling))
        return results

    def continuation_logprobs(
        self, prompt_ids: Sequence[int], continuations: Sequence[str], *, adapter_path: str = ""
    ) -> list[float]:
        """log P(continuation | prompt) for each continuation, summed over its tokens."""
        torch = self.torch
        prompt = list(prompt_ids)
        scores = []
        with self._weights_for(adapter_path), torch.inference_mode():
            for text in continuations:
                tail = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
                ids = torch.tensor([prompt + tail], device=self.device)
                logits = self.model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
                logprobs = torch.log_softmax(logits, dim=-1)
                picked = logprobs.gather(1, torch.tensor(tail, device=self.device).unsqueeze(1))
                scores.append(float(picked.sum()))
        return scores

    def _generate_batch(
        self, batch: Sequence[EngineRequest], sampling: Sampling
    ) -> list[list[Completion]]:
        torch = self.torch
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id
        width = max(len(request.token_ids) for request in batch)
        # Left padding keeps every prompt's last token next to the tokens it generates.
        input_ids = torch.tensor(
            [[pad_id] * (width - len(r.token_ids)) + r.token_ids for r in batch],
            device=self.device,
        )
        attention_mask = torch.tensor(
            [[0] * (width - len(r.token_ids)) + [1] * len(r.token_ids) for r in batch],
            device=self.device,
        )
        do_sample = sampling.temperature > 0
        # Seeded by the batch's own requests: the same requests give the same outputs.
        torch.manual_seed(sum(r.seed for r in batch) % 2**31)
        options: dict[str, Any] = {
            "max_new_tokens": sampling.max_tokens,
            "do_sample": do_sample,
            "num_return_sequences": sampling.n,
            "pad_token_id": pad_id,
            "eos_token_id": self.eos_ids,
        }
        if do_sample:
            options.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        with torch.inference_mode():
            sequences = self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, **options
            )
        new_tokens = sequences[:, width:].tolist()
        eos_ids = set(self.eos_ids)
        results = []
        for index in range(len(batch)):
            choices = []
            for tokens in new_tokens[index * sampling.n : (index + 1) * sampling.n]:
                stop = next((i for i, t in enumerate(tokens) if t in eos_ids), None)
                kept = tokens if stop is None else tokens[:stop]
                choices.append(
                    Completion(
                        text=self.tokenizer.decode(kept, skip_special_tokens=True),
                        completion_tokens=len(kept) + (0 if stop is None else 1),
                        finish_reason="length" if stop is None else "stop",
                    )
                )
            results.append(choices)
        return results

    def close(self) -> None:
        del self.model
