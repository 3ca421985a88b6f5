"""Prompt building: placeholders, the decision block, few-shot retrieval and the plain layout."""

from __future__ import annotations

import pytest

from alignment_jobs import prompts
from clinic_eval.vocabulary import DEFAULT_DECISION_LAYERS


def case(case_id: str, stratum: str = "General", **fields: object) -> prompts.CaseData:
    truth = {"diagnosis": ["tubal_factor"], "art_strategy": "IVF"}
    return prompts.CaseData(
        id=int(case_id.split("-")[1]),
        external_id=case_id,
        stratum=stratum,
        narrative=f"Narrative of {case_id}.",
        fields=fields,
        ground_truth=truth,
    )


POOL = [
    case("C-1", age=30, amh_ng_ml=3.0, tubes="patent"),
    case("C-2", age=31, amh_ng_ml=2.8, tubes="patent"),
    case("C-3", age=42, amh_ng_ml=0.4, tubes="blocked"),
    case("C-4", age=39, amh_ng_ml=0.6, tubes="blocked"),
    case("C-5", "Confusion", age=30, amh_ng_ml=3.0, tubes="patent"),
]


def test_template_problems_name_each_bad_placeholder() -> None:
    assert prompts.template_problems("{{ narrative }} {{ fields.age }} {{ answer_format }}") == []
    problems = prompts.template_problems("{{ patient }} {{ case.id }} {{ narrative }")
    assert problems[0].startswith("{{ patient }} is not a known placeholder")
    assert "only fields.<name> may have a dot" in problems[1]
    assert "unbalanced" in problems[2]


def test_rendering_fills_fields_and_refuses_a_missing_one() -> None:
    text = prompts.render_template(
        "{{ fields.age }} y, AMH {{ fields.amh_ng_ml }}\n{{ fields }}",
        POOL[0],
        layers=DEFAULT_DECISION_LAYERS,
    )
    assert text == "30 y, AMH 3\nage: 30\namh_ng_ml: 3\ntubes: patent"
    with pytest.raises(prompts.TemplateError, match="case C-1 has no field 'afc'"):
        prompts.render_template("{{ fields.afc }}", POOL[0], layers=DEFAULT_DECISION_LAYERS)


def test_the_answer_format_lists_every_layer_and_label() -> None:
    text = prompts.answer_format(DEFAULT_DECISION_LAYERS)
    assert "ART strategy: IUI | IVF | ICSI | PGT-A | PGT-M | PGT-SR" in text
    assert "Diagnosis: unexplained; tubal_factor;" in text


def test_few_shot_examples_are_the_nearest_never_the_case_and_fixed_by_seed() -> None:
    query = case("C-9", age=41, amh_ng_ml=0.5, tubes="blocked")
    chosen = prompts.few_shot_examples(query, POOL, k=2, seed=1)
    assert [c.external_id for c in chosen] == ["C-3", "C-4"]

    itself = prompts.few_shot_examples(POOL[0], POOL, k=2, seed=1)
    assert "C-1" not in [c.external_id for c in itself]
    assert [c.external_id for c in itself] == ["C-2", "C-5"], "another stratum costs a little"

    twins = [case(f"T-{i}", age=30) for i in range(1, 9)]
    query = case("Q-1", age=30)
    picks = {
        seed: [c.external_id for c in prompts.few_shot_examples(query, twins, k=3, seed=seed)]
        for seed in range(4)
    }
    assert picks[0] == [c.external_id for c in prompts.few_shot_examples(query, twins, k=3, seed=0)]
    assert len({tuple(p) for p in picks.values()}) > 1, "ties are broken by the seed"
    assert prompts.few_shot_examples(query, twins, k=0, seed=0) == []


def test_messages_put_each_example_before_the_case_with_its_ground_truth() -> None:
    rendered = prompts.build_messages(
        POOL[0],
        system_prompt="Be brief.",
        user_template="{{ narrative }}",
        layers=DEFAULT_DECISION_LAYERS,
        examples=POOL[1:3],
    )
    roles = [m["role"] for m in rendered.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert rendered.messages[2]["content"] == "Diagnosis: tubal_factor\nART strategy: IVF"
    assert rendered.messages[-1]["content"] == "Narrative of C-1."
    assert rendered.few_shot_ids == ["C-2", "C-3"]
    plain = prompts.plain_prompt(rendered.messages)
    assert plain.startswith("Be brief.\n\nNarrative of C-2.\n\nAnswer:\nDiagnosis: tubal_factor")
    assert plain.endswith("Narrative of C-1.\n\nAnswer:\n")


def test_request_seeds_depend_on_the_case_and_the_spec_seed_only() -> None:
    assert prompts.request_seed(7, "C-1") == prompts.request_seed(7, "C-1")
    assert prompts.request_seed(7, "C-1") != prompts.request_seed(7, "C-2")
    assert prompts.request_seed(7, "C-1") != prompts.request_seed(8, "C-1")
    assert 0 <= prompts.request_seed(7, "C-1") < 2**31
