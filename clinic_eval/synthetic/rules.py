"""The labelling rules: thresholds, ground truth per decision layer and strata.

Each threshold is documented with its source in docs/synthetic-data.md. These are simplified
teaching rules, not clinical advice."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TypeVar

from clinic_eval.vocabulary import DIAGNOSIS_LABELS

LAYERS: tuple[str, ...] = ("diagnosis", "art_strategy", "protocol", "dose_band")
LAYER_TITLES: dict[str, str] = {
    "diagnosis": "Diagnosis",
    "art_strategy": "ART strategy",
    "protocol": "Stimulation protocol",
    "dose_band": "Gonadotropin start dose",
}

# --- Thresholds (each one is documented with its source in docs/synthetic-data.md) -------------

SEMEN_CONCENTRATION_LRL = 16.0  # WHO 2021 lower reference limits (5th centile)
SEMEN_PROGRESSIVE_MOTILITY_LRL = 30.0
SEMEN_NORMAL_FORMS_LRL = 4.0
SEVERE_CONCENTRATION = 5.0
SEVERE_TPMC = 5.0
PCOM_TOTAL_AFC = 40  # >= 20 follicles per ovary (2018 international PCOS guideline)
PCOM_AMH = 4.7
LOW_RESERVE_AMH = 1.1  # Bologna 2011
LOW_RESERVE_AFC = 7
RPL_LOSSES = 2  # ESHRE 2022
RIF_FAILED_TRANSFERS = 3
PGT_A_AGE = 38
IVF_AGE = 38
IVF_FAILED_IUI = 3
IVF_DURATION_YEARS = 3.0
POOR_RESPONDER_AGE = 40
HIGH_RESPONSE_AFC = 20  # strictly above
HIGH_RESPONSE_AMH = 3.5  # strictly above
BORDERLINE_AMH = (1.1, 1.5)
SHORT_AGONIST_AGE = (35, 39)
HIGH_DOSE_AGE = 38
HIGH_DOSE_BMI = 30.0

# Margins around the thresholds above inside which a case is "Confusion" (inclusive bounds).
MARGIN_TPMC = (5.0, 10.0)
MARGIN_CONCENTRATION = (5.0, 8.0)
MARGIN_PGT_A_AGE = (37, 38)
MARGIN_AMH = (0.9, 1.3)
MARGIN_UNEXPLAINED_AGE = (35, 37)
MARGIN_DURATION = (2.5, 3.5)

# carrier_status -> carrier_type. The strings double as the narrative's genetics sentence.
MONOGENIC_AT_RISK: tuple[str, ...] = (
    "both partners carriers of HBB (beta-thalassaemia)",
    "both partners carriers of HBA1/HBA2 (alpha-thalassaemia, SEA deletion)",
    "male carrier of CFTR, partner carrier of CFTR",
    "female carrier of DMD (X-linked)",
    "male affected by PKD1 (autosomal dominant polycystic kidney disease)",
)
MONOGENIC_NOT_AT_RISK: tuple[str, ...] = (
    "female carrier of GJB2, partner tested negative",
    "male carrier of HBB, partner tested negative",
)
CHROMOSOMAL_BALANCED: tuple[str, ...] = (
    "female balanced reciprocal translocation t(11;22)",
    "male balanced reciprocal translocation t(2;7)",
    "male Robertsonian translocation rob(13;14)",
    "female Robertsonian translocation rob(14;21)",
)
CHROMOSOMAL_NORMAL_VARIANT: tuple[str, ...] = ("pericentric inversion inv(9)",)

# What the rules assume for a field that a hand-written or imported case leaves out.
NORMAL_FIELDS: dict[str, object] = {
    "age": 32,
    "bmi": 22.0,
    "amh_ng_ml": 2.5,
    "afc": 12,
    "fsh_iu_l": 6.5,
    "infertility_type": "primary",
    "infertility_years": 1.5,
    "cycle_pattern": "regular",
    "hyperandrogenism": False,
    "tubal_findings": "patent",
    "uterine_findings": "normal",
    "endometriosis_stage": "none",
    "prior_iui_cycles": 0,
    "prior_ivf_cycles": 0,
    "prior_poor_response": False,
    "prior_fertilisation_failure": False,
    "failed_good_quality_transfers": 0,
    "pregnancy_losses": 0,
    "semen_volume_ml": 3.0,
    "semen_concentration_m_per_ml": 50.0,
    "semen_progressive_motility_pct": 45,
    "semen_normal_forms_pct": 8,
    "total_progressive_motile_count_m": 67.5,
    "carrier_status": "none",
    "carrier_type": "none",
}


# --- Small helpers ----------------------------------------------------------------------------


def clip(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _between(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] <= value <= bounds[1]


def seeded_rng(*parts: object) -> random.Random:
    # A string seed is hashed with SHA-512 by random.Random, so it is stable across processes
    # and independent of PYTHONHASHSEED.
    return random.Random(":".join(str(p) for p in parts))


_T = TypeVar("_T")


def weighted_pick(rng: random.Random, weighted: tuple[tuple[_T, float], ...]) -> _T:
    return rng.choices([k for k, _ in weighted], weights=[w for _, w in weighted])[0]


def number_text(value: float) -> str:
    # Clinicians write "3 years" and "AMH 2", not "3.0 years" and "AMH 2.0".
    return str(int(value)) if float(value).is_integer() else str(value)


def years_text(value: float) -> str:
    return "1 year" if value == 1 else f"{number_text(value)} years"


def sorted_labels(labels: set[str]) -> list[str]:
    return [label for label in DIAGNOSIS_LABELS if label in labels]


# --- Ground-truth rules -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Findings:
    male_severe: bool
    male_mild: bool
    pcos: bool
    low_reserve: bool
    tubal: bool
    endometriosis: bool
    endometriosis_severe: bool
    uterine: bool
    rpl: bool
    rif: bool
    monogenic: bool
    monogenic_at_risk: bool
    chromosomal: bool
    high_responder: bool
    poor_responder: bool
    borderline_reserve: bool


def _complete(fields: dict) -> dict:
    full = {**NORMAL_FIELDS, **fields}
    if "total_progressive_motile_count_m" not in fields:
        tpmc = full["semen_volume_ml"] * full["semen_concentration_m_per_ml"]
        full["total_progressive_motile_count_m"] = round(
            tpmc * full["semen_progressive_motility_pct"] / 100, 1
        )
    if "carrier_type" not in fields:
        status = full["carrier_status"]
        if status in MONOGENIC_AT_RISK + MONOGENIC_NOT_AT_RISK:
            full["carrier_type"] = "monogenic"
        elif status in CHROMOSOMAL_BALANCED + CHROMOSOMAL_NORMAL_VARIANT:
            full["carrier_type"] = "chromosomal"
    return full


def _is_normal_variant(status: str) -> bool:
    # inv(9)(p12q13) is a population heteromorphism with no reproductive risk.
    return "inv(9)" in status


def assess(fields: dict) -> _Findings:
    age = fields["age"]
    amh = fields["amh_ng_ml"]
    afc = fields["afc"]
    conc = fields["semen_concentration_m_per_ml"]
    tpmc = fields["total_progressive_motile_count_m"]
    # Azoospermia (concentration 0) is the extreme of the concentration criterion.
    male_severe = conc < SEVERE_CONCENTRATION or tpmc < SEVERE_TPMC
    male_mild = not male_severe and (
        conc < SEMEN_CONCENTRATION_LRL
        or fields["semen_progressive_motility_pct"] < SEMEN_PROGRESSIVE_MOTILITY_LRL
        or fields["semen_normal_forms_pct"] < SEMEN_NORMAL_FORMS_LRL
    )
    rotterdam = (
        fields["cycle_pattern"] == "oligo-anovulatory",
        bool(fields["hyperandrogenism"]),
        afc >= PCOM_TOTAL_AFC or amh >= PCOM_AMH,
    )
    low_reserve = amh < LOW_RESERVE_AMH or afc < LOW_RESERVE_AFC
    carrier_type = fields["carrier_type"]
    status = fields["carrier_status"]
    pcos = sum(rotterdam) >= 2
    return _Findings(
        male_severe=male_severe,
        male_mild=male_mild,
        pcos=pcos,
        low_reserve=low_reserve,
        tubal=fields["tubal_findings"] in ("bilateral occlusion", "hydrosalpinx"),
        endometriosis=fields["endometriosis_stage"] != "none",
        endometriosis_severe=fields["endometriosis_stage"] == "III-IV",
        uterine=fields["uterine_findings"] != "normal",
        rpl=fields["pregnancy_losses"] >= RPL_LOSSES,
        rif=fields["failed_good_quality_transfers"] >= RIF_FAILED_TRANSFERS,
        monogenic=carrier_type == "monogenic",
        monogenic_at_risk=carrier_type == "monogenic" and "tested negative" not in status,
        chromosomal=carrier_type == "chromosomal" and not _is_normal_variant(status),
        high_responder=pcos or afc > HIGH_RESPONSE_AFC or amh > HIGH_RESPONSE_AMH,
        poor_responder=(age >= POOR_RESPONDER_AGE and low_reserve)
        or bool(fields["prior_poor_response"]),
        borderline_reserve=_between(amh, BORDERLINE_AMH),
    )


def _diagnosis_labels(fields: dict) -> list[str]:
    fi = assess(fields)
    flags = {
        "tubal_factor": fi.tubal,
        "male_factor_mild": fi.male_mild,
        "male_factor_severe": fi.male_severe,
        "ovulatory_dysfunction_pcos": fi.pcos,
        "diminished_ovarian_reserve": fi.low_reserve,
        "endometriosis": fi.endometriosis,
        "uterine_factor": fi.uterine,
        "recurrent_pregnancy_loss": fi.rpl,
        "recurrent_implantation_failure": fi.rif,
        "monogenic_carrier": fi.monogenic,
        "chromosomal_rearrangement_carrier": fi.chromosomal,
    }
    labels = {label for label, present in flags.items() if present}
    return sorted_labels(labels or {"unexplained"})


def ivf_indications(fields: dict) -> list[str]:
    # Keys rather than a bool so that the reasoning text and the Confusion margins can say why.
    fi = assess(fields)
    checks = (
        ("tubal", fi.tubal),
        ("low_reserve", fi.low_reserve),
        ("endometriosis_severe", fi.endometriosis_severe),
        ("age", fields["age"] >= IVF_AGE),
        ("failed_iui", fields["prior_iui_cycles"] >= IVF_FAILED_IUI),
        ("male_mild", fi.male_mild),
        ("duration", fields["infertility_years"] >= IVF_DURATION_YEARS),
        ("prior_ivf", fields["prior_ivf_cycles"] >= 1),
    )
    return [key for key, applies in checks if applies]


def _art_strategy(fields: dict) -> str:
    fi = assess(fields)
    if fi.monogenic_at_risk:
        return "PGT-M"
    if fi.chromosomal:
        return "PGT-SR"
    if fi.male_severe or fields["prior_fertilisation_failure"]:
        return "ICSI"
    if fields["age"] >= PGT_A_AGE and (fi.rpl or fi.rif):
        return "PGT-A"
    if ivf_indications(fields):
        return "IVF"
    return "IUI"


def _protocol(fields: dict, strategy: str) -> str:
    fi = assess(fields)
    if strategy == "IUI" or fi.poor_responder:
        return "mild/natural"
    if fi.high_responder:
        return "GnRH antagonist"
    if strategy.startswith("PGT") and not fi.low_reserve:
        return "PPOS"
    if fi.endometriosis_severe or fields["uterine_findings"] == "adenomyosis":
        return "long agonist"
    if (
        fi.borderline_reserve
        and _between(fields["age"], SHORT_AGONIST_AGE)
        and fields["prior_ivf_cycles"] >= 1
    ):
        return "short agonist"
    return "GnRH antagonist"


def _dose_band(fields: dict, chosen_protocol: str) -> str:
    fi = assess(fields)
    if chosen_protocol == "mild/natural" or fi.high_responder:
        return "<=150 IU"
    if fi.low_reserve or fields["age"] >= HIGH_DOSE_AGE or fields["bmi"] >= HIGH_DOSE_BMI:
        return "226-300 IU"
    return "151-225 IU"


def derive_ground_truth(fields: dict) -> dict:
    """The four decision layers that the documented rules give for these fields.

    Missing fields are read as in NORMAL_FIELDS.
    """
    fields = _complete(fields)
    strategy = _art_strategy(fields)
    chosen_protocol = _protocol(fields, strategy)
    return {
        "diagnosis": _diagnosis_labels(fields),
        "art_strategy": strategy,
        "protocol": chosen_protocol,
        "dose_band": _dose_band(fields, chosen_protocol),
    }


def confusion_reasons(fields: dict) -> list[str]:
    """The documented margins that the case falls inside; empty for a case that is not Confusion.

    Missing fields are read as in NORMAL_FIELDS.
    """
    fields = _complete(fields)
    fi = assess(fields)
    conc = fields["semen_concentration_m_per_ml"]
    reasons = []
    if _between(fields["total_progressive_motile_count_m"], MARGIN_TPMC) or _between(
        conc, MARGIN_CONCENTRATION
    ):
        reasons.append("male_margin")
    if _between(fields["age"], MARGIN_PGT_A_AGE) and (fi.rpl or fi.rif):
        reasons.append("pgt_a_age_margin")
    # AMH only decides reserve when the AFC does not already say "low".
    if _between(fields["amh_ng_ml"], MARGIN_AMH) and fields["afc"] >= LOW_RESERVE_AFC:
        reasons.append("amh_margin")
    # IUI versus IVF is only close when age or duration is all that could tip it.
    if (
        _diagnosis_labels(fields) == ["unexplained"]
        and set(ivf_indications(fields)) <= {"age", "duration"}
        and (
            _between(fields["age"], MARGIN_UNEXPLAINED_AGE)
            or _between(fields["infertility_years"], MARGIN_DURATION)
        )
    ):
        reasons.append("unexplained_margin")
    if _is_normal_variant(fields["carrier_status"]):
        reasons.append("normal_variant")
    if fi.monogenic and not fi.monogenic_at_risk:
        reasons.append("carrier_not_at_risk")
    return reasons


def derive_stratum(fields: dict) -> str:
    """The stratum: Human Enhancement for PGT-M/PGT-SR, Confusion near a threshold, else General."""
    fields = _complete(fields)
    if _art_strategy(fields) in ("PGT-M", "PGT-SR"):
        return "Human Enhancement"
    return "Confusion" if confusion_reasons(fields) else "General"
