"""Tiny Llama checkpoints and LoRA adapters, built locally for tests, the demo and benchmarks.

The files have the same layout as a real Hugging Face checkpoint (``config.json``,
``model.safetensors``, tokenizer files, ``generation_config.json``) and real PEFT adapters, so the
loading code used for an 8B model runs unchanged on them, with Transformers or vLLM, on a CPU and
without any access to a model hub. The weights are random: the text they generate is gibberish.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Bump when the builder's output changes, so existing sets built by older code are rebuilt.
LAYOUT_VERSION = 1

BOS_TOKEN = "<|begin_of_text|>"
END_OF_TEXT_TOKEN = "<|end_of_text|>"
START_HEADER_TOKEN = "<|start_header_id|>"
END_HEADER_TOKEN = "<|end_header_id|>"
EOT_TOKEN = "<|eot_id|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = (
    BOS_TOKEN,
    END_OF_TEXT_TOKEN,
    START_HEADER_TOKEN,
    END_HEADER_TOKEN,
    EOT_TOKEN,
    PAD_TOKEN,
)

# Llama 3's turn format without its leading {{ bos_token }}: the tokenizer's post-processor adds
# the BOS, so text rendered with tokenize=False and then tokenized carries exactly one.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)

LORA_RANK = 8
LORA_ALPHA = 16
LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
# PEFT starts lora_B at zero, which makes a fresh adapter a no-op; this much noise is enough for
# each adapter's greedy output to differ from the base's and from the other adapters'.
LORA_B_STD = 0.1
# vLLM's CPU attention kernels reject smaller heads.
MIN_HEAD_DIM = 32
CORPUS_CASES = 300


@dataclass(frozen=True)
class TinyModelSet:
    base: Path
    adapters: dict[str, Path]


def build_tiny_models(
    out_dir: Path,
    *,
    seed: int = 0,
    adapter_names: Sequence[str] = ("sft", "dpo", "grpo"),
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 256,
    vocab_size: int = 2048,
    force: bool = False,
) -> TinyModelSet:
    """Build (or reuse) a tiny base checkpoint and one LoRA adapter per name under ``out_dir``.

    Layout: ``out_dir/base/``, ``out_dir/adapters/<name>/`` and ``out_dir/BUILD.json``, which is
    written last, so a set without it is incomplete. An existing set built with the same
    parameters is returned as it is unless ``force`` is true.

    ``vocab_size`` is the BPE trainer's ceiling: the synthetic corpus runs out of merges first
    (about 1,650 tokens at the defaults), and the model's embedding rows are the tokenizer's
    length rounded up to a multiple of 64.
    """
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
    head_dim = hidden_size // num_heads
    if head_dim < MIN_HEAD_DIM:
        raise ValueError(
            f"head_dim = hidden_size / num_heads = {head_dim}, but vLLM's CPU attention needs "
            f"at least {MIN_HEAD_DIM}"
        )
    names = list(adapter_names)
    if len(set(names)) != len(names):
        raise ValueError(f"adapter names must be unique, got {names}")
    for name in names:
        if not name or name in (".", "..") or "/" in name or os.sep in name:
            raise ValueError(f"adapter name {name!r} is not a plain directory name")

    out_dir = Path(out_dir).resolve()
    parameters = {
        "layout_version": LAYOUT_VERSION,
        "seed": seed,
        "adapter_names": names,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "intermediate_size": intermediate_size,
        "vocab_size": vocab_size,
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(out_dir.parent / f".{out_dir.name}.lock"):
        if not force and _read_parameters(out_dir) == parameters:
            return _model_set(out_dir, names)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
        try:
            _build(staging, final_dir=out_dir, parameters=parameters)
            _make_world_readable(staging)
            _swap_into_place(staging, out_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return _model_set(out_dir, names)


def _model_set(out_dir: Path, names: list[str]) -> TinyModelSet:
    return TinyModelSet(
        base=out_dir / "base",
        adapters={name: out_dir / "adapters" / name for name in names},
    )


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    # Test sessions and workers may build the same set at once; one builds, the others reuse it.
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_parameters(out_dir: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((out_dir / "BUILD.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker.get("parameters") if isinstance(marker, dict) else None


def _make_world_readable(root: Path) -> None:
    # mkdtemp and the safetensors writers create owner-only (0700/0600) entries, but the set is
    # read by web and worker processes that may run as other users.
    root.chmod(0o755)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    # A directory cannot be renamed over a non-empty one, so move the old set aside first; in
    # between, out_dir is missing, never half-written.
    if out_dir.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, retired / "set")
        os.replace(staging, out_dir)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, out_dir)


def _build(staging: Path, *, final_dir: Path, parameters: dict[str, Any]) -> None:
    # Imported here so that importing this module (e.g. for a Django command's --help) stays cheap.
    import peft
    import tokenizers
    import torch
    import transformers

    seed = parameters["seed"]
    base_dir = staging / "base"
    tokenizer = _train_tokenizer(seed=seed, vocab_size=parameters["vocab_size"])
    tokenizer.save_pretrained(base_dir)

    num_heads = parameters["num_heads"]
    hidden_size = parameters["hidden_size"]
    bos_id = tokenizer.convert_tokens_to_ids(BOS_TOKEN)
    eot_id = tokenizer.convert_tokens_to_ids(EOT_TOKEN)
    end_of_text_id = tokenizer.convert_tokens_to_ids(END_OF_TEXT_TOKEN)
    pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    config = transformers.LlamaConfig(
        # Rounded up as in real checkpoints; the extra rows are never produced by the tokenizer.
        vocab_size=_round_up(len(tokenizer), 64),
        hidden_size=hidden_size,
        intermediate_size=parameters["intermediate_size"],
        num_hidden_layers=parameters["num_layers"],
        num_attention_heads=num_heads,
        # Grouped-query attention, as in Llama 3, so that code path is exercised too.
        num_key_value_heads=num_heads // 2 if num_heads % 2 == 0 else num_heads,
        head_dim=hidden_size // num_heads,
        max_position_embeddings=4096,
        bos_token_id=bos_id,
        eos_token_id=eot_id,
        pad_token_id=pad_id,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(base_dir, safe_serialization=True)
    transformers.GenerationConfig(
        bos_token_id=bos_id,
        # Either end token stops generation, as in Llama 3 Instruct.
        eos_token_id=[eot_id, end_of_text_id],
        pad_token_id=pad_id,
        do_sample=False,
    ).save_pretrained(base_dir)
    del model

    final_base = final_dir / "base"
    for name in parameters["adapter_names"]:
        adapter_seed = _adapter_seed(seed, name)
        torch.manual_seed(adapter_seed)
        base_model = transformers.LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        lora_config = peft.LoraConfig(
            r=LORA_RANK,
            lora_alpha=LORA_ALPHA,
            target_modules=list(LORA_TARGET_MODULES),
            lora_dropout=0.0,
            bias="none",
            task_type="CAUSAL_LM",
        )
        adapted = peft.get_peft_model(base_model, lora_config)
        generator = torch.Generator().manual_seed(adapter_seed)
        with torch.no_grad():
            for parameter_name, weight in adapted.named_parameters():
                if "lora_B" in parameter_name:
                    weight.normal_(0.0, LORA_B_STD, generator=generator)
        # The staging path disappears on the rename; record where the base will live.
        adapted.peft_config["default"].base_model_name_or_path = str(final_base)
        # False: the embeddings are not adapted, and "auto" would look the base up on the Hub
        # because the final base path does not exist yet.
        adapted.save_pretrained(
            staging / "adapters" / name, safe_serialization=True, save_embedding_layers=False
        )
        del adapted, base_model

    marker = {
        "parameters": parameters,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "peft": peft.__version__,
        },
    }
    # Written last: its presence is what marks the set as complete.
    (staging / "BUILD.json").write_text(
        json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )


def _train_tokenizer(*, seed: int, vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from clinic_eval import synthetic

    cases = synthetic.generate_cases(n=CORPUS_CASES, seed=seed)
    corpus = [case["narrative"] for case in cases]
    corpus += [row["text"] for row in synthetic.generate_simulated_responses(cases, seed=seed)]

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        # Every byte in the vocabulary, so no text is ever unknown.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer=trainer)
    bos_id = backend.token_to_id(BOS_TOKEN)
    backend.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS_TOKEN} $A",
                pair=f"{BOS_TOKEN} $A {BOS_TOKEN}:1 $B:1",
                special_tokens=[(BOS_TOKEN, bos_id)],
            ),
        ]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOT_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=4096,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _adapter_seed(seed: int, name: str) -> int:
    # hashlib, not hash(): str hashes change between processes unless PYTHONHASHSEED is fixed.
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
