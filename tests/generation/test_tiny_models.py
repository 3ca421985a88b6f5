"""The tiny local Llama checkpoint and LoRA adapters: they load, generate and differ."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from alignment_jobs.demo.tiny_models import BOS_TOKEN, MIN_HEAD_DIM, TinyModelSet, build_tiny_models

# The model libraries are not among the app's dependencies; without them there is nothing to test.
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
safetensors_torch = pytest.importorskip("safetensors.torch")

PROMPT = "Woman aged 38 years, AMH 1.1 ng/mL, AFC 9."
NEW_TOKENS = 8
# A layer whose shape does not depend on the trained vocabulary, so seeds can be compared.
FIXED_SHAPE_WEIGHT = "model.layers.0.self_attn.q_proj.weight"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModelSet:
    return build_tiny_models(tmp_path_factory.mktemp("tiny-models") / "set", seed=0)


@pytest.fixture(scope="session")
def tokenizer(tiny: TinyModelSet) -> Any:
    return transformers.AutoTokenizer.from_pretrained(tiny.base)


def load_base(tiny: TinyModelSet) -> Any:
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny.base)
    return model.eval()


def greedy(model: Any, tokenizer: Any) -> list[int]:
    inputs = tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(
            **inputs,
            max_new_tokens=NEW_TOKENS,
            # Random weights may pick an end token early; the comparisons need all eight.
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
        )
    return output[0, inputs["input_ids"].shape[1] :].tolist()


def last_logits(model: Any, tokenizer: Any) -> Any:
    inputs = tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        return model(**inputs).logits[0, -1]


def test_the_layout_is_a_checkpoint_and_one_adapter_per_name(tiny: TinyModelSet) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (tiny.base / name).is_file(), name
    assert sorted(tiny.adapters) == ["dpo", "grpo", "sft"]
    for path in tiny.adapters.values():
        assert (path / "adapter_model.safetensors").is_file()
        adapter_config = json.loads((path / "adapter_config.json").read_text())
        assert adapter_config["base_model_name_or_path"] == str(tiny.base)
    assert tiny.base.is_absolute()
    # Web and worker processes may run as other users than the one that built the set.
    assert (tiny.base / "model.safetensors").stat().st_mode & 0o444 == 0o444


def test_heads_are_large_enough_for_vllm_on_cpu(tiny: TinyModelSet) -> None:
    config = transformers.AutoConfig.from_pretrained(tiny.base)
    assert config.head_dim >= MIN_HEAD_DIM
    assert config.head_dim * config.num_attention_heads == config.hidden_size
    assert config.vocab_size % 64 == 0


def test_the_base_loads_and_generates_greedily(tiny: TinyModelSet, tokenizer: Any) -> None:
    model = load_base(tiny)
    first = greedy(model, tokenizer)
    assert len(first) == NEW_TOKENS
    assert greedy(model, tokenizer) == first, "greedy decoding is deterministic"
    assert isinstance(tokenizer.decode(first), str)


def test_chat_prompts_and_plain_prompts_get_exactly_one_bos(tokenizer: Any) -> None:
    messages = [
        {"role": "system", "content": "You are a reproductive endocrinologist."},
        {"role": "user", "content": PROMPT},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert BOS_TOKEN not in text, "the post-processor adds the BOS, not the template"
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    for prompt in (text, PROMPT):
        ids = tokenizer(prompt)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id
        assert ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(tokenizer(PROMPT)["input_ids"], skip_special_tokens=True) == PROMPT


def test_each_adapter_changes_the_output(tiny: TinyModelSet, tokenizer: Any) -> None:
    base = load_base(tiny)
    base_tokens = greedy(base, tokenizer)
    base_logits = last_logits(base, tokenizer)
    adapter_tokens = {}
    for name, path in tiny.adapters.items():
        # PeftModel injects its layers into the model it wraps, so each adapter needs a fresh one.
        adapted = peft.PeftModel.from_pretrained(load_base(tiny), path).eval()
        adapter_tokens[name] = greedy(adapted, tokenizer)
        shift = (last_logits(adapted, tokenizer) - base_logits).abs().max().item()
        assert shift > 0.1, f"{name} barely moves the logits ({shift:.4f})"
        assert adapter_tokens[name] != base_tokens, f"{name} generates what the base generates"
    assert len({tuple(tokens) for tokens in adapter_tokens.values()}) == len(adapter_tokens)


def test_a_second_build_with_the_same_parameters_is_a_no_op(tiny: TinyModelSet) -> None:
    out_dir = tiny.base.parent
    marker = out_dir / "BUILD.json"
    before = (marker.stat().st_mtime_ns, (tiny.base / "model.safetensors").stat().st_mtime_ns)
    again = build_tiny_models(out_dir, seed=0)
    assert again == tiny
    after = (marker.stat().st_mtime_ns, (tiny.base / "model.safetensors").stat().st_mtime_ns)
    assert after == before


def test_an_incomplete_or_different_set_is_rebuilt(tmp_path: Path) -> None:
    out_dir = tmp_path / "set"
    build_tiny_models(out_dir, adapter_names=("a",))
    (out_dir / "BUILD.json").unlink()
    # Without the marker the set counts as half-written, whatever else is on disk.
    rebuilt = build_tiny_models(out_dir, adapter_names=("b",))
    assert (out_dir / "BUILD.json").is_file()
    assert sorted(path.name for path in (out_dir / "adapters").iterdir()) == ["b"]
    assert rebuilt.adapters == {"b": out_dir / "adapters" / "b"}
    assert [path.name for path in tmp_path.iterdir() if path.is_dir()] == ["set"], (
        "no staging directory is left behind"
    )


def test_different_seeds_give_different_weights(tiny: TinyModelSet, tmp_path: Path) -> None:
    other = build_tiny_models(tmp_path / "seed-1", seed=1, adapter_names=())
    weight_0 = safetensors_torch.load_file(tiny.base / "model.safetensors")[FIXED_SHAPE_WEIGHT]
    weight_1 = safetensors_torch.load_file(other.base / "model.safetensors")[FIXED_SHAPE_WEIGHT]
    assert weight_0.shape == weight_1.shape
    assert not torch.equal(weight_0, weight_1)
    lora_b = [
        next(
            tensor
            for key, tensor in safetensors_torch.load_file(
                path / "adapter_model.safetensors"
            ).items()
            if "lora_B" in key
        )
        for path in tiny.adapters.values()
    ]
    assert not torch.equal(lora_b[0], lora_b[1]), "each adapter has its own seed"


def test_heads_smaller_than_vllm_allows_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="head_dim"):
        build_tiny_models(tmp_path / "set", hidden_size=64, num_heads=4)
    assert not (tmp_path / "set").exists()
