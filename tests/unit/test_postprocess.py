"""Blinding clean-up, leak checks and decision parsing (clinic_eval.postprocess).

Pure tests: no database, no Django models.
"""

from __future__ import annotations

import random
import string

import pytest

from clinic_eval.studies.postprocess import (
    EXCERPT_CHARS,
    LEAK_KINDS,
    LeakFlag,
    ParsedDecision,
    display_text,
    leak_flags,
    parse_decision,
)
from clinic_eval.synthetic import SIMULATED_ARMS, generate_cases, generate_simulated_responses
from clinic_eval.vocabulary import DEFAULT_DECISION_LAYERS, DIAGNOSIS_LABELS

LAYERS = DEFAULT_DECISION_LAYERS
FINAL_BLOCK = (
    "Diagnosis: male_factor_mild; tubal_factor\n"
    "ART strategy: IVF\n"
    "Stimulation protocol: GnRH antagonist\n"
    "Gonadotropin start dose: 151-225 IU"
)
AFTER_DIAGNOSIS = FINAL_BLOCK.split("\n", 1)[1]
FINAL_DECISION = {
    "diagnosis": ["male_factor_mild", "tubal_factor"],
    "art_strategy": "IVF",
    "protocol": "GnRH antagonist",
    "dose_band": "151-225 IU",
}


@pytest.fixture(scope="module")
def simulated_responses() -> list[dict]:
    cases = generate_cases(n=50, seed=7)
    return generate_simulated_responses(cases, seed=7)


def kinds(text: str, **kwargs: list[str]) -> list[str]:
    return [flag.kind for flag in leak_flags(text, **kwargs)]


# --- display_text --------------------------------------------------------------------------------

DISPLAY_CASES = [
    pytest.param(
        "<think>\nweighing IVF\n</think>\n\nIVF is advised.", "IVF is advised.", id="think"
    ),
    pytest.param(
        "<Thinking>a\nb</THINKING>Plan.<reasoning>x</reasoning> Done.",
        "Plan. Done.",
        id="thinking-reasoning-case-insensitive",
    ),
    pytest.param("Plan.\n<reflection>\nstill going", "Plan.", id="unclosed-open-tag"),
    pytest.param("the prompt opened the tag\n</think>\nAnswer.", "Answer.", id="stray-close"),
    pytest.param("Answer.<|eot_id|>", "Answer.", id="eot"),
    pytest.param("<|im_start|>assistant\nAnswer.<|im_end|>", "Answer.", id="chatml"),
    pytest.param(
        "<|begin_of_text|><|start_header_id|>assistant<|end_header_id|>\n\nAnswer.<|end_of_text|>",
        "Answer.",
        id="llama3-header",
    ),
    pytest.param("<s>Answer.</s>", "Answer.", id="s-tags"),
    pytest.param("[INST] <<SYS>>\n<</SYS>> [/INST] Answer.", "Answer.", id="llama2"),
    pytest.param("<bos><start_of_turn>model\nAnswer.<end_of_turn><eos>", "Answer.", id="gemma"),
    pytest.param("Answer.<pad><pad><unk>", "Answer.", id="pad-unk"),
    pytest.param("<｜begin▁of▁sentence｜>Answer.", "Answer.", id="fullwidth-bars"),
    pytest.param("IVF<|im_end|>first", "IVF first", id="token-between-words"),
    pytest.param(
        "<|im_start|>assistant\nAnswer.<|im_end|>\n<|im_start|>user\nAnd then?",
        "Answer.",
        id="next-turn-token",
    ),
    pytest.param("Assistant: Answer.", "Answer.", id="leading-assistant-prefix"),
    pytest.param("assistant\nAnswer.", "Answer.", id="leading-role-line"),
    pytest.param("Answer.\n\nUser: thanks!\nAssistant: welcome", "Answer.", id="user-turn"),
    pytest.param("Answer.\nHuman: next case", "Answer.", id="human-turn"),
    pytest.param("Answer.\n### Instruction\nWrite more", "Answer.", id="instruction"),
    pytest.param("Answer.\nAssistant: again", "Answer.", id="assistant-continuation"),
    pytest.param("A\r\nB\rC", "A\nB\nC", id="line-endings"),
    pytest.param("e\u0301", "\u00e9", id="nfc"),
    pytest.param("\ufeffIV\u200bF\u200c\u200d\u2060", "IVF", id="zero-width-bom"),
    pytest.param("  \n\nA   \n\n\n\n\nB\t\n\n  ", "A\n\nB", id="whitespace"),
    pytest.param("", "", id="empty"),
    pytest.param("<think>only reasoning", "", id="reasoning-only"),
]


@pytest.mark.parametrize(("raw", "expected"), DISPLAY_CASES)
def test_display_text_removes_artefacts(raw: str, expected: str) -> None:
    assert display_text(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        *(case.values[0] for case in DISPLAY_CASES),
        "A<|<|x|>|>B",
        "<th<think>x</think>ink>y",
        "Assistant:\nassistant\nAssistant: hi",
        "x\n\n\n \n\n\ny  \n",
        "<s> </s>\n\n\n<|eot_id|>  Human: hi",
    ],
)
def test_display_text_is_idempotent(raw: str) -> None:
    once = display_text(raw)
    assert display_text(once) == once


def test_display_text_keeps_clean_text_apart_from_whitespace() -> None:
    clean = (
        "Plan:\n- IVF with ICSI\n  - indented note\n\nBMI 31 kg/m², AMH ≤ 1.1 ng/mL; PPOS protocol."
    )
    assert display_text(clean) == clean
    assert display_text(f"\n\n{clean.replace(chr(10), '   ' + chr(10))}   \n") == clean


def test_simulated_responses_are_already_clean(simulated_responses: list[dict]) -> None:
    for response in simulated_responses:
        assert display_text(response["text"]) == response["text"]
        assert leak_flags(response["text"], arm_labels=SIMULATED_ARMS) == []


# --- leak_flags ----------------------------------------------------------------------------------

LEAKS = [
    ("As an AI language model, I cannot examine the patient.", "self_identification"),
    ("As a large language model I suggest IVF.", "self_identification"),
    ("I am an AI and cannot prescribe.", "self_identification"),
    ("I’m an AI assistant.", "self_identification"),
    ("I am a language model.", "self_identification"),
    ("I was trained by Anthropic.", "self_identification"),
    ("This assistant was developed by Meta.", "self_identification"),
    ("Based on my training data, IVF works.", "self_identification"),
    ("After my knowledge cutoff the guideline changed.", "self_identification"),
    ("OpenAI guidance says", "vendor_or_model_name"),
    ("ChatGPT would say", "vendor_or_model_name"),
    ("GPT-4o suggests", "vendor_or_model_name"),
    ("gpt-3.5 suggests", "vendor_or_model_name"),
    ("Claude thinks", "vendor_or_model_name"),
    ("Llama-3 output", "vendor_or_model_name"),
    ("LLaMA 3.1 output", "vendor_or_model_name"),
    ("a Meta AI model", "vendor_or_model_name"),
    ("Mistral output", "vendor_or_model_name"),
    ("Mixtral output", "vendor_or_model_name"),
    ("Qwen2.5 output", "vendor_or_model_name"),
    ("DeepSeek output", "vendor_or_model_name"),
    ("Gemini output", "vendor_or_model_name"),
    ("Gemma output", "vendor_or_model_name"),
    ("Phi-3 output", "vendor_or_model_name"),
    ("from Hugging Face", "vendor_or_model_name"),
    ("served by vLLM", "vendor_or_model_name"),
    ("after SFT the model", "vendor_or_model_name"),
    ("the DPO arm", "vendor_or_model_name"),
    ("GRPO training", "vendor_or_model_name"),
    ("RLHF made me careful", "vendor_or_model_name"),
    ("PPO update", "vendor_or_model_name"),
    ("a LoRA adapter", "vendor_or_model_name"),
    ("as a fine-tuned model", "vendor_or_model_name"),
    ("the reward model prefers", "vendor_or_model_name"),
    ("<think>draft</think>", "reasoning_trace"),
    ("done</reasoning>", "reasoning_trace"),
    ("IVF<|eot_id|>", "special_token"),
    ("<|im_start|>assistant", "special_token"),
    ("<s>IVF", "special_token"),
    ("[INST] question", "special_token"),
    ("<<SYS>>", "special_token"),
    ("<end_of_turn>", "special_token"),
    ("<start_of_turn>model", "special_token"),
    ("IVF<pad>", "special_token"),
    ("<unk>", "special_token"),
    ("Traceback (most recent call last):", "error_string"),
    ("CUDA out of memory. Tried to allocate", "error_string"),
    ("torch.OutOfMemoryError", "error_string"),
    ("RuntimeError: shape mismatch", "error_string"),
    ("Exception: failed", "error_string"),
    ("[ERROR] generation failed", "error_string"),
    ("502 Internal Server Error", "error_string"),
    ("Rate limit exceeded, retry later", "error_string"),
    ("context length exceeded", "error_string"),
    ("This model's maximum context length is 8192 tokens", "error_string"),
]


@pytest.mark.parametrize(("text", "kind"), LEAKS)
def test_leak_is_flagged(text: str, kind: str) -> None:
    flags = leak_flags(f"IVF is advised. {text} Review in clinic.")
    assert kind in [flag.kind for flag in flags]


CLINICAL_TEXT = [
    "A meta-analysis of RCTs supports a GnRH antagonist protocol.",
    "Meta-analyses and a metaanalysis agree.",
    "Intermittent claudication is unrelated to fertility.",
    "A PPOS protocol suits a freeze-all cycle.",
    "Phimosis was repaired in childhood.",
    "Gemelli muscles; twin (gemellar) pregnancy risk.",
    "A philanthropic fund covered the cycle.",
    "Anthropometric data: BMI 31 kg/m².",
    "Mitral valve prolapse, treated.",
    "The embryo was graded using an AI-based time-lapse ranking tool.",
    "Criteria developed by ESHRE and trained by the fellowship programme.",
    "One error: the AFC was recounted.",
    "Male factor with teratozoospermia; offer ICSI.",
    "Diagnosis: male_factor_mild\nGonadotropin start dose: <=150 IU",
]


@pytest.mark.parametrize("text", CLINICAL_TEXT)
def test_clinical_vocabulary_is_not_flagged(text: str) -> None:
    assert leak_flags(text, arm_labels=["A", "B"]) == []


def test_flags_follow_leak_kinds_order_with_one_flag_per_kind() -> None:
    text = (
        "RuntimeError: boom <|eot_id|> Claude and GPT-4 <think> As an AI language model "
        "the SFT-sim arm, I am an AI"
    )
    flags = leak_flags(text, arm_labels=["SFT-sim"])
    assert [flag.kind for flag in flags] == [kind for kind in LEAK_KINDS if kind != "empty"]
    assert "Claude" in flags[1].excerpt  # the first match, not the second


def test_excerpt_is_short_and_around_the_match() -> None:
    text = "x" * 200 + " trained by OpenAI " + "y" * 200
    [*_, vendor] = leak_flags(text)
    assert vendor.kind == "vendor_or_model_name"
    assert "OpenAI" in vendor.excerpt
    assert len(vendor.excerpt) <= EXCERPT_CHARS
    assert LeakFlag("empty", "").as_dict() == {"kind": "empty", "excerpt": ""}


def test_arm_label_is_matched_as_a_whole_word() -> None:
    assert kinds("the SFT-sim arm", arm_labels=["SFT-sim"]) == ["vendor_or_model_name", "arm_label"]
    assert kinds("see arm icl-SIM.", arm_labels=["ICL-sim"]) == ["arm_label"]
    assert kinds("see arm_b output", arm_labels=["b "]) == []  # shorter than 2 once stripped
    assert kinds("Arm A: a cabbage", arm_labels=["A"]) == []
    assert kinds("cabbage", arm_labels=["ab"]) == []
    assert kinds("model beta two", arm_labels=["beta  two"]) == ["arm_label"]
    assert kinds("Answer.", arm_labels=[]) == []


def test_extra_terms_are_reported_as_arm_labels() -> None:
    flags = leak_flags("loaded ckpt-epoch3/adapter", extra_terms=["ckpt-epoch3"])
    assert [flag.as_dict() for flag in flags] == [
        {"kind": "arm_label", "excerpt": "loaded ckpt-epoch3/adapter"}
    ]
    # Underscores are boundaries too: checkpoint names are often joined with them.
    assert kinds("my_adapter_v2 says", extra_terms=["adapter_v2"]) == ["arm_label"]
    assert kinds("readapter_v2s", extra_terms=["adapter_v2"]) == []


@pytest.mark.parametrize("text", ["", "   \n\t", "\u200b\ufeff"])
def test_empty_text_is_flagged(text: str) -> None:
    assert leak_flags(text) == [LeakFlag("empty", "")]


def test_leak_flags_work_on_raw_text_and_hidden_spellings() -> None:
    raw = "<|start_header_id|>assistant<|end_header_id|>\r\n<think>x</think>Open\u200bAI"
    assert kinds(raw) == ["vendor_or_model_name", "reasoning_trace", "special_token"]
    assert kinds("ＧＰＴ‑４ says") == ["vendor_or_model_name"]  # fullwidth, non-breaking hyphen
    assert kinds(display_text(raw)) == ["vendor_or_model_name"]


# --- parse_decision ------------------------------------------------------------------------------


def test_parses_every_simulated_response(simulated_responses: list[dict]) -> None:
    assert len(simulated_responses) == 50 * len(SIMULATED_ARMS)
    for response in simulated_responses:
        parsed = parse_decision(response["text"], LAYERS)
        assert parsed.ok, parsed.problems
        assert parsed.decision == response["decision"]


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(FINAL_BLOCK, id="plain"),
        pytest.param(
            "**Diagnosis:** male_factor_mild, tubal_factor\n**ART strategy**: IVF.\n"
            "- Stimulation protocol: `GnRH antagonist`\n## Gonadotropin start dose: 151–225 IU",
            id="markdown",
        ),
        pytest.param(
            "diagnosis - Male_Factor_Mild and tubal factor\nart_strategy: ivf\n"
            "1. protocol: gnrh ANTAGONIST\n> dose_band : 151 - 225 iu",
            id="keys-and-case",
        ),
        pytest.param(
            "Diagnosis: unexplained\nART strategy: IUI\nplenty of discussion\n\n" + FINAL_BLOCK,
            id="last-occurrence-wins",
        ),
        pytest.param(
            "Diagnosis: male_factor_mild; tubal_factor; male_factor_mild\n" + AFTER_DIAGNOSIS,
            id="duplicates",
        ),
    ],
)
def test_parses_decorated_final_blocks(block: str) -> None:
    parsed = parse_decision(f"Some reasoning first.\n\n{block}\n", LAYERS)
    assert parsed == ParsedDecision(FINAL_DECISION, [])
    assert parsed.ok


def test_unknown_and_missing_layers_are_reported() -> None:
    text = "Diagnosis: tubal_factor; PCOS; endometriosis\nART strategy: IVF+PGT\nDose: 150"
    parsed = parse_decision(text, LAYERS)
    assert parsed.decision == {"diagnosis": ["tubal_factor", "endometriosis"]}
    assert parsed.problems == [
        f"Diagnosis: 'PCOS' is not one of: {', '.join(DIAGNOSIS_LABELS)}",
        "ART strategy: 'IVF+PGT' is not one of: IUI, IVF, ICSI, PGT-A, PGT-M, PGT-SR",
        "Stimulation protocol: not found",
        "Gonadotropin start dose: not found",
    ]
    assert not parsed.ok


def test_multi_label_with_only_unknown_labels_is_left_out_of_the_decision() -> None:
    parsed = parse_decision("Diagnosis: PCOS, RIF\n" + AFTER_DIAGNOSIS, LAYERS)
    assert "diagnosis" not in parsed.decision
    assert [p.split(":")[0] for p in parsed.problems] == ["Diagnosis", "Diagnosis"]


def test_empty_value_counts_as_not_found() -> None:
    parsed = parse_decision(FINAL_BLOCK.replace(": IVF", ":"), LAYERS)
    assert parsed.problems == ["ART strategy: not found"]


def test_long_unknown_values_are_shortened_in_problems() -> None:
    parsed = parse_decision("ART strategy: " + "IVF " * 100, LAYERS)
    assert len(parsed.problems[0]) < 200


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\x00\x01\ufffd<|eot_id|>:::",
        "Diagnosis:\nART strategy - \n: IVF\n**\n- -\n",
        "Diagnosis: " + ";" * 10_000,
        "ART strategy: " + "x" * 1_000_000,
        "\n".join(["Diagnosis: tubal_factor"] * 20_000),
    ],
)
def test_parse_decision_never_raises(text: str) -> None:
    parsed = parse_decision(text, LAYERS)
    assert isinstance(parsed, ParsedDecision)
    assert all(isinstance(problem, str) for problem in parsed.problems)


def test_parse_decision_survives_random_tokens() -> None:
    rng = random.Random(11)
    alphabet = string.printable + "–—≤µ²:;,-*#"
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(300)))
        parse_decision(text, LAYERS)
    assert parse_decision(None, LAYERS).problems  # type: ignore[arg-type]
    assert parse_decision(FINAL_BLOCK, {"x": {}}).problems == ["x: not found"]


def test_control_characters_are_removed_but_tabs_and_newlines_stay() -> None:
    assert display_text("IVF\x00 plan\x07\x1b[0m\tnow\x85\nnext\x7f") == "IVF plan[0m\tnow\nnext"
