"""Synthetic case generator: determinism, format, labelling rules and the simulated arms.

Pure tests: no database, and runnable with ``-p no:django`` while the project is being built.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from clinic_eval import synthetic
from clinic_eval.vocabulary import (
    ART_STRATEGIES,
    DEFAULT_DECISION_LAYERS,
    DIAGNOSIS_LABELS,
    DOSE_BANDS,
    PROTOCOLS,
    STRATA,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
N_LARGE = 8000


@pytest.fixture(scope="module")
def cases() -> list[dict]:
    return synthetic.generate_cases(n=N_LARGE, seed=1)


@pytest.fixture(scope="module")
def responses(cases: list[dict]) -> list[dict]:
    return synthetic.generate_simulated_responses(cases, seed=1)


def _digest(n: int, seed: int) -> str:
    cases = synthetic.generate_cases(n=n, seed=seed)
    responses = synthetic.generate_simulated_responses(cases, seed=seed)
    text = synthetic.dumps_jsonl(cases) + synthetic.dumps_jsonl(responses)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _disagrees(case: dict) -> bool:
    return case["original_decision"]["decision"] != case["ground_truth"]


# --- Determinism ------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_output() -> None:
    first = synthetic.generate_cases(n=300, seed=7)
    second = synthetic.generate_cases(n=300, seed=7)
    assert synthetic.dumps_jsonl(first) == synthetic.dumps_jsonl(second)
    assert synthetic.dumps_jsonl(
        synthetic.generate_simulated_responses(first, seed=7)
    ) == synthetic.dumps_jsonl(synthetic.generate_simulated_responses(second, seed=7))


def test_output_is_identical_across_processes_and_hash_seeds() -> None:
    code = (
        "import hashlib; from clinic_eval import synthetic as s; "
        "c = s.generate_cases(n=200, seed=3); "
        "r = s.generate_simulated_responses(c, seed=3); "
        "t = s.dumps_jsonl(c) + s.dumps_jsonl(r); "
        "print(hashlib.sha256(t.encode('utf-8')).hexdigest())"
    )
    digests = set()
    for hash_seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "LC_ALL": "C"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        digests.add(result.stdout.strip())
    assert digests == {_digest(200, 3)}


def test_different_seeds_give_different_output() -> None:
    assert synthetic.dumps_jsonl(synthetic.generate_cases(n=50, seed=1)) != synthetic.dumps_jsonl(
        synthetic.generate_cases(n=50, seed=2)
    )
    cases = synthetic.generate_cases(n=50, seed=1)
    assert synthetic.generate_simulated_responses(
        cases, seed=1
    ) != synthetic.generate_simulated_responses(cases, seed=2)


def test_a_smaller_run_is_a_prefix_of_a_larger_one(
    cases: list[dict], responses: list[dict]
) -> None:
    small = synthetic.generate_cases(n=100, seed=1)
    assert small == cases[:100]
    arms = len(synthetic.SIMULATED_ARMS)
    assert synthetic.generate_simulated_responses(small, seed=1) == responses[: 100 * arms]


def test_dumps_jsonl_is_compact_one_object_per_line() -> None:
    rows = [{"b": 1, "a": [1.5, "x"]}, {"case_id": "SYN-00001", "ok": True, "none": None}]
    text = synthetic.dumps_jsonl(rows)
    assert text == '{"b":1,"a":[1.5,"x"]}\n{"case_id":"SYN-00001","ok":true,"none":null}\n'
    assert [json.loads(line) for line in text.splitlines()] == rows
    assert synthetic.dumps_jsonl([]) == ""


def test_the_package_stays_free_of_django() -> None:
    imported = set()
    for module in Path(synthetic.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module or "")
    assert "clinic_eval.synthetic.rules" in imported, "the scan found the package's modules"
    assert not any(name.split(".")[0] == "django" for name in imported)


# --- Format -----------------------------------------------------------------------------------


def _assert_valid_decision(decision: dict) -> None:
    assert set(decision) == set(DEFAULT_DECISION_LAYERS)
    diagnosis = decision["diagnosis"]
    assert isinstance(diagnosis, list) and diagnosis
    assert diagnosis == [label for label in DIAGNOSIS_LABELS if label in diagnosis]
    assert "unexplained" not in diagnosis or diagnosis == ["unexplained"]
    assert decision["art_strategy"] in ART_STRATEGIES
    assert decision["protocol"] in PROTOCOLS
    assert decision["dose_band"] in DOSE_BANDS


def test_cases_follow_the_import_format(cases: list[dict]) -> None:
    ids = [case["case_id"] for case in cases]
    assert ids == [f"SYN-{i:05d}" for i in range(1, N_LARGE + 1)]
    for case in cases:
        assert list(case) == [
            "case_id",
            "stratum",
            "narrative",
            "fields",
            "ground_truth",
            "original_decision",
        ]
        assert re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", case["case_id"])
        assert case["stratum"] in STRATA
        assert 0 < len(case["narrative"]) <= 20_000
        fields = case["fields"]
        assert len(fields) <= 100
        for name, value in fields.items():
            assert re.fullmatch(r"[a-z0-9_]+", name)
            assert value is None or isinstance(value, str | int | float | bool)
            assert not isinstance(value, str) or len(value) <= 500
        _assert_valid_decision(case["ground_truth"])
        original = case["original_decision"]
        assert list(original) == ["text", "decision", "author"]
        assert original["text"]
        _assert_valid_decision(original["decision"])
        assert re.fullmatch(r"dr-(0[1-9]|1[0-2])", original["author"])


def test_responses_follow_the_import_format(cases: list[dict], responses: list[dict]) -> None:
    assert len(responses) == len(cases) * len(synthetic.SIMULATED_ARMS)
    case_ids = {case["case_id"] for case in cases}
    seen = set()
    for response in responses:
        assert list(response) == ["case_id", "arm", "sample", "text", "decision"]
        assert response["case_id"] in case_ids
        assert response["arm"] in synthetic.SIMULATED_ARMS
        assert response["sample"] == 0
        assert 0 < len(response["text"]) <= 50_000
        _assert_valid_decision(response["decision"])
        seen.add((response["case_id"], response["arm"], response["sample"]))
    assert len(seen) == len(responses)


def test_fields_are_rounded_and_consistent(cases: list[dict]) -> None:
    for case in cases:
        f = case["fields"]
        assert 20 <= f["age"] <= 45
        assert f["bmi"] == round(f["bmi"], 1)
        assert f["amh_ng_ml"] == round(f["amh_ng_ml"], 2)
        expected_tpmc = (
            f["semen_volume_ml"]
            * f["semen_concentration_m_per_ml"]
            * f["semen_progressive_motility_pct"]
            / 100
        )
        assert f["total_progressive_motile_count_m"] == round(expected_tpmc, 1)
        if f["pregnancy_losses"]:
            assert f["infertility_type"] == "secondary"
        if not f["prior_ivf_cycles"]:
            assert not f["prior_poor_response"] and not f["prior_fertilisation_failure"]
            assert f["failed_good_quality_transfers"] == 0
        if f["semen_concentration_m_per_ml"] == 0:
            assert f["total_progressive_motile_count_m"] == 0


# --- Distribution -----------------------------------------------------------------------------


def test_every_label_appears_in_a_large_run(cases: list[dict]) -> None:
    truths = [case["ground_truth"] for case in cases]
    assert {case["stratum"] for case in cases} == set(STRATA)
    assert {t["art_strategy"] for t in truths} == set(ART_STRATEGIES)
    assert {t["protocol"] for t in truths} == set(PROTOCOLS)
    assert {t["dose_band"] for t in truths} == set(DOSE_BANDS)
    assert {label for t in truths for label in t["diagnosis"]} == set(DIAGNOSIS_LABELS)


def test_prevalences_are_in_the_documented_ranges(cases: list[dict]) -> None:
    strata = Counter(case["stratum"] for case in cases)
    strategies = Counter(case["ground_truth"]["art_strategy"] for case in cases)
    assert 0.03 <= strata["Human Enhancement"] / N_LARGE <= 0.06
    assert 0.20 <= strata["Confusion"] / N_LARGE <= 0.30
    assert 0.015 <= strategies["PGT-M"] / N_LARGE <= 0.03
    assert 0.015 <= strategies["PGT-SR"] / N_LARGE <= 0.03


def test_labels_and_stratum_are_derived_from_the_fields(cases: list[dict]) -> None:
    for case in cases:
        assert case["ground_truth"] == synthetic.derive_ground_truth(case["fields"])
        assert case["stratum"] == synthetic.derive_stratum(case["fields"])
        genetic = case["ground_truth"]["art_strategy"] in ("PGT-M", "PGT-SR")
        assert genetic == (case["stratum"] == "Human Enhancement")
        assert (case["stratum"] == "Confusion") == bool(
            not genetic and synthetic.confusion_reasons(case["fields"])
        )


# --- Rules, with hand-built cases ---------------------------------------------------------------

HBB = "both partners carriers of HBB (beta-thalassaemia)"
T11_22 = "female balanced reciprocal translocation t(11;22)"
INV9 = "pericentric inversion inv(9)"


def test_azoospermia_means_icsi_and_severe_male_factor() -> None:
    truth = synthetic.derive_ground_truth(
        {"semen_concentration_m_per_ml": 0.0, "semen_progressive_motility_pct": 0}
    )
    assert truth["art_strategy"] == "ICSI"
    assert truth["diagnosis"] == ["male_factor_severe"]


def test_couple_both_carrying_hbb_gets_pgt_m() -> None:
    fields = {"carrier_status": HBB, "carrier_type": "monogenic"}
    assert synthetic.derive_ground_truth(fields)["art_strategy"] == "PGT-M"
    assert synthetic.derive_ground_truth(fields)["diagnosis"] == ["monogenic_carrier"]
    assert synthetic.derive_stratum(fields) == "Human Enhancement"


def test_single_carrier_with_negative_partner_is_not_at_risk() -> None:
    fields = {"carrier_status": "female carrier of GJB2, partner tested negative"}
    truth = synthetic.derive_ground_truth(fields)
    assert truth["art_strategy"] != "PGT-M"
    assert truth["diagnosis"] == ["monogenic_carrier"]
    assert synthetic.derive_stratum(fields) == "Confusion"


def test_balanced_translocation_gets_pgt_sr() -> None:
    fields = {"carrier_status": T11_22, "carrier_type": "chromosomal"}
    truth = synthetic.derive_ground_truth(fields)
    assert truth["art_strategy"] == "PGT-SR"
    assert truth["diagnosis"] == ["chromosomal_rearrangement_carrier"]
    assert truth["protocol"] == "PPOS"
    assert synthetic.derive_stratum(fields) == "Human Enhancement"


def test_inversion_9_is_a_normal_variant_not_pgt_sr() -> None:
    fields = {"carrier_status": INV9, "carrier_type": "chromosomal"}
    truth = synthetic.derive_ground_truth(fields)
    assert truth["art_strategy"] != "PGT-SR"
    assert "chromosomal_rearrangement_carrier" not in truth["diagnosis"]
    assert synthetic.derive_stratum(fields) == "Confusion"


def test_pcos_gets_antagonist_and_low_dose() -> None:
    fields = {
        "age": 28,
        "bmi": 31.0,
        "cycle_pattern": "oligo-anovulatory",
        "hyperandrogenism": True,
        "amh_ng_ml": 8.2,
        "afc": 42,
        "prior_iui_cycles": 3,
    }
    truth = synthetic.derive_ground_truth(fields)
    assert "ovulatory_dysfunction_pcos" in truth["diagnosis"]
    assert truth["art_strategy"] == "IVF"
    assert truth["protocol"] == "GnRH antagonist"
    assert truth["dose_band"] == "<=150 IU"


def test_rotterdam_needs_two_of_three() -> None:
    one = {"cycle_pattern": "oligo-anovulatory", "amh_ng_ml": 2.0, "afc": 14}
    two = {**one, "afc": 40}
    assert "ovulatory_dysfunction_pcos" not in synthetic.derive_ground_truth(one)["diagnosis"]
    assert "ovulatory_dysfunction_pcos" in synthetic.derive_ground_truth(two)["diagnosis"]


def test_bilateral_tubal_occlusion_means_ivf() -> None:
    truth = synthetic.derive_ground_truth({"tubal_findings": "bilateral occlusion"})
    assert truth["art_strategy"] == "IVF"
    assert truth["diagnosis"] == ["tubal_factor"]
    unilateral = synthetic.derive_ground_truth({"tubal_findings": "unilateral occlusion"})
    assert unilateral["diagnosis"] == ["unexplained"]


def test_age_40_with_low_amh_is_a_poor_responder() -> None:
    truth = synthetic.derive_ground_truth({"age": 40, "amh_ng_ml": 0.5, "afc": 4})
    assert truth["diagnosis"] == ["diminished_ovarian_reserve"]
    assert truth["art_strategy"] == "IVF"
    assert truth["protocol"] == "mild/natural"
    assert truth["dose_band"] == "<=150 IU"


def test_young_unexplained_short_duration_means_iui() -> None:
    fields = {"age": 30, "infertility_years": 1.5}
    assert synthetic.derive_ground_truth(fields) == {
        "diagnosis": ["unexplained"],
        "art_strategy": "IUI",
        "protocol": "mild/natural",
        "dose_band": "<=150 IU",
    }
    assert synthetic.derive_stratum(fields) == "General"
    assert synthetic.derive_ground_truth({"age": 30, "infertility_years": 3.0})["art_strategy"] == (
        "IVF"
    )
    assert synthetic.derive_stratum({"age": 30, "infertility_years": 3.0}) == "Confusion"


@pytest.mark.parametrize(
    ("semen", "expected"),
    [
        ({"semen_concentration_m_per_ml": 15.9}, ["male_factor_mild"]),
        ({"semen_concentration_m_per_ml": 16.0}, ["unexplained"]),
        ({"semen_progressive_motility_pct": 29}, ["male_factor_mild"]),
        ({"semen_normal_forms_pct": 3}, ["male_factor_mild"]),
        ({"semen_concentration_m_per_ml": 4.9}, ["male_factor_severe"]),
        (
            {
                "semen_volume_ml": 2.0,
                "semen_concentration_m_per_ml": 20.0,
                "semen_progressive_motility_pct": 12,
            },
            ["male_factor_severe"],
        ),
    ],
)
def test_who_2021_semen_thresholds(semen: dict, expected: list[str]) -> None:
    assert synthetic.derive_ground_truth(semen)["diagnosis"] == expected


def test_borderline_tpmc_is_ivf_but_confusion() -> None:
    fields = {
        "semen_volume_ml": 2.5,
        "semen_concentration_m_per_ml": 12.0,
        "semen_progressive_motility_pct": 25,
    }
    assert synthetic.derive_ground_truth(fields)["art_strategy"] == "IVF"
    assert synthetic.derive_stratum(fields) == "Confusion"


def test_previous_fertilisation_failure_means_icsi() -> None:
    fields = {"prior_ivf_cycles": 1, "prior_fertilisation_failure": True}
    assert synthetic.derive_ground_truth(fields)["art_strategy"] == "ICSI"


def test_pgt_a_from_38_with_recurrent_loss_or_implantation_failure() -> None:
    rpl_38 = {"age": 38, "pregnancy_losses": 2, "infertility_type": "secondary"}
    rif_39 = {"age": 39, "prior_ivf_cycles": 3, "failed_good_quality_transfers": 3}
    assert synthetic.derive_ground_truth(rpl_38)["art_strategy"] == "PGT-A"
    assert synthetic.derive_ground_truth(rif_39)["art_strategy"] == "PGT-A"
    assert synthetic.derive_ground_truth(rpl_38)["protocol"] == "PPOS"
    rpl_37 = {**rpl_38, "age": 37}
    assert synthetic.derive_ground_truth(rpl_37)["art_strategy"] != "PGT-A"
    assert synthetic.derive_stratum(rpl_37) == "Confusion"
    assert synthetic.derive_stratum(rpl_38) == "Confusion"
    assert synthetic.derive_stratum({**rpl_38, "age": 41}) == "General"


def test_severe_endometriosis_gets_long_agonist() -> None:
    truth = synthetic.derive_ground_truth(
        {"endometriosis_stage": "III-IV", "amh_ng_ml": 1.8, "afc": 10}
    )
    assert truth["art_strategy"] == "IVF"
    assert truth["protocol"] == "long agonist"
    mild = synthetic.derive_ground_truth({"endometriosis_stage": "I-II"})
    assert mild["diagnosis"] == ["endometriosis"] and mild["art_strategy"] == "IUI"


def test_borderline_reserve_after_a_cycle_gets_short_agonist() -> None:
    fields = {"age": 37, "amh_ng_ml": 1.3, "afc": 8, "prior_ivf_cycles": 1}
    assert synthetic.derive_ground_truth(fields)["protocol"] == "short agonist"


def test_pgt_with_low_reserve_is_not_ppos() -> None:
    fields = {"carrier_status": T11_22, "amh_ng_ml": 0.6, "afc": 5, "age": 36}
    assert synthetic.derive_ground_truth(fields)["protocol"] == "GnRH antagonist"


@pytest.mark.parametrize(
    ("fields", "band"),
    [
        ({"tubal_findings": "hydrosalpinx"}, "151-225 IU"),
        ({"tubal_findings": "hydrosalpinx", "bmi": 31.0}, "226-300 IU"),
        ({"tubal_findings": "hydrosalpinx", "age": 38}, "226-300 IU"),
        ({"tubal_findings": "hydrosalpinx", "amh_ng_ml": 0.8, "afc": 6}, "226-300 IU"),
        ({"tubal_findings": "hydrosalpinx", "afc": 24}, "<=150 IU"),
    ],
)
def test_dose_bands(fields: dict, band: str) -> None:
    assert synthetic.derive_ground_truth(fields)["dose_band"] == band


# --- Physician's original decision ------------------------------------------------------------


def test_physician_disagreement_rates_per_stratum(cases: list[dict]) -> None:
    # With about 370 Human Enhancement cases the binomial spread is about 1.4 points.
    ranges = {"General": (0.08, 0.12), "Confusion": (0.28, 0.38), "Human Enhancement": (0.03, 0.13)}
    for stratum, (low, high) in ranges.items():
        in_stratum = [case for case in cases if case["stratum"] == stratum]
        rate = sum(_disagrees(case) for case in in_stratum) / len(in_stratum)
        assert low <= rate <= high, (stratum, rate)


def test_physician_differs_in_exactly_one_layer(cases: list[dict]) -> None:
    for case in filter(_disagrees, cases):
        decision = case["original_decision"]["decision"]
        changed = [k for k in synthetic.LAYERS if decision[k] != case["ground_truth"][k]]
        assert len(changed) == 1
        if case["stratum"] == "Human Enhancement":
            assert decision["art_strategy"] == case["ground_truth"]["art_strategy"]


# --- Simulated arms ---------------------------------------------------------------------------


def _accuracy(cases: list[dict], responses: list[dict], arm: str, layer: str) -> float:
    truth = {case["case_id"]: case["ground_truth"] for case in cases}
    rows = [r for r in responses if r["arm"] == arm]
    return sum(r["decision"][layer] == truth[r["case_id"]][layer] for r in rows) / len(rows)


def test_arm_accuracy_ordering(cases: list[dict], responses: list[dict]) -> None:
    acc = {
        arm: _accuracy(cases, responses, arm, "art_strategy") for arm in synthetic.SIMULATED_ARMS
    }
    assert acc["GRPO-sim"] > acc["SFT-sim"] > acc["DPO-sim"] > acc["ICL-sim"]
    assert 0.85 <= acc["GRPO-sim"] <= 0.95
    assert 0.55 <= acc["ICL-sim"] <= 0.70


def test_grpo_errs_towards_the_upper_dose_band(cases: list[dict], responses: list[dict]) -> None:
    truth = {case["case_id"]: case["ground_truth"]["dose_band"] for case in cases}

    def upward_share(arm: str) -> float:
        # Only from the middle band can an error go either way.
        errors = [
            r["decision"]["dose_band"] == "226-300 IU"
            for r in responses
            if r["arm"] == arm
            and truth[r["case_id"]] == "151-225 IU"
            and r["decision"]["dose_band"] != "151-225 IU"
        ]
        return sum(errors) / len(errors)

    assert upward_share("GRPO-sim") >= 0.8
    assert upward_share("SFT-sim") <= 0.65

    def top_band(arm: str) -> int:
        return sum(
            r["arm"] == arm and r["decision"]["dose_band"] == "226-300 IU" for r in responses
        )

    assert top_band("GRPO-sim") > max(Counter(truth.values())["226-300 IU"], top_band("SFT-sim"))


def test_responses_are_blinded(responses: list[dict]) -> None:
    tokens = ("SFT", "DPO", "GRPO", "ICL", "As an AI", "<think>", "</think>")
    model_names = re.compile(r"\b(GPT|Llama|Qwen|Mistral|Gemma|Claude|Gemini)\b", re.I)
    arm_names = [arm.lower() for arm in synthetic.SIMULATED_ARMS]
    for response in responses:
        text = response["text"]
        assert not any(token in text for token in tokens), (response["case_id"], response["arm"])
        assert not model_names.search(text)
        assert not any(arm in text.lower() for arm in arm_names)


def test_final_block_parses_back_to_the_decision(responses: list[dict]) -> None:
    for response in responses:
        lines = response["text"].split("\n")[-4:]
        assert [line.split(": ", 1)[0] for line in lines] == [
            "Diagnosis",
            "ART strategy",
            "Stimulation protocol",
            "Gonadotropin start dose",
        ]
        assert synthetic.parse_final_block(response["text"]) == response["decision"]


def test_arm_styles_differ(cases: list[dict], responses: list[dict]) -> None:
    by_arm: dict[str, list[str]] = {arm: [] for arm in synthetic.SIMULATED_ARMS}
    for response in responses[:400]:
        by_arm[response["arm"]].append(response["text"])
    assert all(text.startswith("Assessment:") for text in by_arm["SFT-sim"])
    assert all("Rationale:" in text for text in by_arm["SFT-sim"])
    assert all("couple" in text for text in by_arm["DPO-sim"])
    assert all(text.startswith("Case:") for text in by_arm["ICL-sim"])
    mean_length = {arm: sum(map(len, texts)) / len(texts) for arm, texts in by_arm.items()}
    assert mean_length["DPO-sim"] > mean_length["SFT-sim"] > mean_length["GRPO-sim"]


# --- Narratives -------------------------------------------------------------------------------


def test_narratives_are_de_identified_prose(cases: list[dict]) -> None:
    date = re.compile(r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}/\d{1,2}/\d{2,4}\b|\b(19|20)\d{2}\b")
    honorific = re.compile(r"\b(Mr|Mrs|Ms|Miss|Dr|Prof|Mx)\b\.?\s+[A-Z]")
    sentence_end = re.compile(r"(?<=\.)\s+(?=[A-Z])")
    for case in cases:
        narrative = case["narrative"]
        assert not date.search(narrative), narrative
        assert not honorific.search(narrative), narrative
        assert f"{case['fields']['age']}" in narrative
        assert 3 <= len(sentence_end.split(narrative)) <= 6, narrative


# --- Summary and management command -------------------------------------------------------------


def test_summarize_reports_counts_and_arm_accuracy(
    cases: list[dict], responses: list[dict]
) -> None:
    small = cases[:200]
    without = synthetic.summarize(small)
    assert without.startswith("Synthetic cases: 200\n")
    for heading in ("Stratum", "ART strategy", "Stimulation protocol", "Gonadotropin start dose"):
        assert f"\n{heading}\n" in without
    assert "Physician disagreement" in without
    assert "Simulated arm accuracy" not in without
    with_arms = synthetic.summarize(small, responses[: 200 * 4])
    assert "Simulated arm accuracy" in with_arms
    assert all(arm in with_arms for arm in synthetic.SIMULATED_ARMS)


def _run_command(*argv: str) -> tuple[str, str]:
    # Driven through the command's own parser so the test needs no configured settings.
    from clinic_eval.management.commands.synth_cases import Command

    stdout, stderr = io.StringIO(), io.StringIO()
    command = Command(stdout=stdout, stderr=stderr)
    options = vars(command.create_parser("manage.py", "synth_cases").parse_args(list(argv)))
    args = options.pop("args", ())
    command.execute(*args, **options)
    return stdout.getvalue(), stderr.getvalue()


def test_command_writes_identical_files(tmp_path: Path) -> None:
    for name in ("a", "b"):
        _run_command(
            "--n", "30", "--seed", "5",
            "--out", str(tmp_path / f"{name}-cases.jsonl"),
            "--responses-out", str(tmp_path / f"{name}-responses.jsonl"),
        )  # fmt: skip
    for kind in ("cases", "responses"):
        first = (tmp_path / f"a-{kind}.jsonl").read_bytes()
        assert first == (tmp_path / f"b-{kind}.jsonl").read_bytes()
    cases = synthetic.generate_cases(n=30, seed=5)
    assert (tmp_path / "a-cases.jsonl").read_bytes() == synthetic.dumps_jsonl(cases).encode()


def test_command_to_stdout_sends_the_summary_to_stderr() -> None:
    stdout, stderr = _run_command("--n", "5", "--seed", "1", "--out", "-", "--summary")
    assert stdout == synthetic.dumps_jsonl(synthetic.generate_cases(n=5, seed=1))
    assert stderr.startswith("Synthetic cases: 5\n")


def test_command_rejects_a_non_positive_n() -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--n must be at least 1"):
        _run_command("--n", "0", "--out", "-")
