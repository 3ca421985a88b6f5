"""Reasoning phrases shared by the physician's original decision and the simulated arms."""

from __future__ import annotations

import random

from clinic_eval.synthetic.rules import (
    HIGH_DOSE_AGE,
    HIGH_DOSE_BMI,
    assess,
    ivf_indications,
    number_text,
    years_text,
)

STRATEGY_PHRASES: dict[str, str] = {
    "IUI": "IUI with ovarian stimulation",
    "IVF": "IVF with conventional insemination",
    "ICSI": "ICSI",
    "PGT-A": "IVF/ICSI with PGT-A",
    "PGT-M": "ICSI with PGT-M",
    "PGT-SR": "ICSI with PGT-SR",
}
PROTOCOL_PHRASES: dict[str, str] = {
    "GnRH antagonist": "GnRH antagonist protocol",
    "long agonist": "long GnRH agonist protocol",
    "short agonist": "short agonist (flare) protocol",
    "PPOS": "progestin-primed ovarian stimulation (PPOS)",
    "mild/natural": "mild stimulation",
}
_DOSES: dict[str, tuple[int, ...]] = {
    "<=150 IU": (100, 112, 125, 150),
    "151-225 IU": (175, 200, 225),
    "226-300 IU": (250, 300),
}


def dose_number(rng: random.Random, band: str, strategy: str) -> int:
    return 75 if strategy == "IUI" and band == "<=150 IU" else rng.choice(_DOSES[band])


def phrase_values(f: dict) -> dict[str, str]:
    return {
        "age": str(f["age"]),
        "amh": number_text(f["amh_ng_ml"]),
        "afc": str(f["afc"]),
        "fsh": number_text(f["fsh_iu_l"]),
        "tpmc": number_text(f["total_progressive_motile_count_m"]),
        "bmi": number_text(f["bmi"]),
        "years": years_text(f["infertility_years"]),
    }


def _ivf_phrase(key: str, f: dict, v: dict[str, str]) -> str:
    return {
        "tubal": f"{f['tubal_findings']} rules out IUI",
        "low_reserve": f"reduced reserve (AMH {v['amh']}, AFC {v['afc']})",
        "endometriosis_severe": "stage III-IV endometriosis",
        "age": f"age {v['age']}",
        "failed_iui": f"{f['prior_iui_cycles']} failed IUI cycles",
        "male_mild": "mild male factor, not severe enough for ICSI",
        "duration": f"{v['years']} of infertility",
        "prior_ivf": "already had IVF",
    }[key]


def strategy_reason(f: dict, strategy: str, v: dict[str, str]) -> str:
    # Wrong labels from the simulated arms reach here too, so no reason may assert a finding
    # that the case does not have.
    carrier = f["carrier_status"] if f["carrier_type"] != "none" else "genetic risk"
    if strategy == "PGT-M":
        return f"{carrier}, so PGT-M to avoid an affected pregnancy"
    if strategy == "PGT-SR":
        return f"{carrier}, so PGT-SR to avoid unbalanced embryos"
    if strategy == "ICSI":
        if f["semen_concentration_m_per_ml"] == 0:
            return "azoospermia, so surgical sperm retrieval and ICSI"
        if f["prior_fertilisation_failure"]:
            return "previous total fertilisation failure with conventional IVF"
        if f["total_progressive_motile_count_m"] < 20:
            return f"TPMC {v['tpmc']} M, too low for conventional insemination"
        return "ICSI to avoid an unexpected fertilisation failure"
    if strategy == "PGT-A":
        history = []
        if f["pregnancy_losses"]:
            history.append(f"{f['pregnancy_losses']} losses")
        if f["failed_good_quality_transfers"]:
            history.append(f"{f['failed_good_quality_transfers']} failed transfers")
        context = " and ".join(history) or "age-related aneuploidy risk"
        return f"age {v['age']} with {context}, so PGT-A to select euploid embryos"
    if strategy == "IVF":
        keys = ivf_indications(f)
        return "; ".join(_ivf_phrase(k, f, v) for k in keys[:2]) or "to shorten time to pregnancy"
    if f["tubal_findings"] == "patent" and not assess(f).male_mild:
        return f"tubes patent and semen adequate after {v['years']}, so IUI with stimulation first"
    return f"{v['years']} of trying, so IUI with stimulation first"


def protocol_reason(f: dict, chosen: str, strategy: str, v: dict[str, str]) -> str:
    fi = assess(f)
    if chosen == "mild/natural":
        if strategy == "IUI":
            return "mild stimulation to limit multiple pregnancy"
        if fi.poor_responder:
            return "expected poor response, so mild stimulation"
        return "mild stimulation to keep the cycle gentle"
    if chosen == "GnRH antagonist":
        if fi.high_responder:
            return f"AFC {v['afc']} and AMH {v['amh']}: OHSS risk, antagonist with agonist trigger"
        return "standard antagonist protocol"
    if chosen == "PPOS":
        if strategy.startswith("PGT"):
            return "freeze-all after biopsy anyway, so PPOS"
        return "PPOS with a freeze-all plan"
    if chosen == "long agonist":
        if fi.endometriosis_severe or f["uterine_findings"] == "adenomyosis":
            return "long agonist down-regulation for endometriosis/adenomyosis"
        return "long agonist for cycle scheduling"
    if fi.borderline_reserve and f["prior_ivf_cycles"]:
        return f"borderline reserve (AMH {v['amh']}) after a previous cycle, so short agonist flare"
    return "short agonist flare protocol"


def dose_reason(f: dict, band: str, v: dict[str, str]) -> str:
    if band == "<=150 IU":
        if assess(f).high_responder:
            return f"low start dose, AFC {v['afc']} predicts a high response"
        return "low start dose; higher doses add nothing here"
    if band == "226-300 IU":
        drivers = []
        if assess(f).low_reserve:
            drivers.append("low reserve")
        if f["age"] >= HIGH_DOSE_AGE:
            drivers.append(f"age {v['age']}")
        if f["bmi"] >= HIGH_DOSE_BMI:
            drivers.append(f"BMI {v['bmi']}")
        return "higher start dose for " + (" and ".join(drivers) or "a better oocyte yield")
    return "standard start dose" if assess(f).low_reserve else "standard start dose, normal reserve"


_DX_WORDS: dict[str, str] = {
    "unexplained": "unexplained infertility",
    "tubal_factor": "tubal factor",
    "male_factor_mild": "mild male factor",
    "male_factor_severe": "severe male factor",
    "ovulatory_dysfunction_pcos": "PCOS",
    "diminished_ovarian_reserve": "diminished ovarian reserve",
    "endometriosis": "endometriosis",
    "uterine_factor": "uterine factor",
    "recurrent_pregnancy_loss": "recurrent pregnancy loss",
    "recurrent_implantation_failure": "recurrent implantation failure",
    "monogenic_carrier": "monogenic carrier status",
    "chromosomal_rearrangement_carrier": "balanced chromosomal rearrangement",
}


def dx_words(labels: list[str]) -> str:
    words = [_DX_WORDS[label] for label in labels]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
