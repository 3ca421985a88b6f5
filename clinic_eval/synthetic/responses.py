"""Simulated arm responses for the demo: template text, not model output."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from clinic_eval.synthetic.phrases import (
    PROTOCOL_PHRASES,
    STRATEGY_PHRASES,
    dose_number,
    dose_reason,
    dx_words,
    phrase_values,
    protocol_reason,
    strategy_reason,
)
from clinic_eval.synthetic.rules import (
    LAYER_TITLES,
    LAYERS,
    assess,
    clip,
    derive_ground_truth,
    number_text,
    seeded_rng,
    sorted_labels,
)
from clinic_eval.vocabulary import DOSE_BANDS

SIMULATED_ARMS: tuple[str, ...] = ("SFT-sim", "DPO-sim", "GRPO-sim", "ICL-sim")


@dataclass(frozen=True)
class ArmProfile:
    accuracy: float  # probability that a layer is right, before the stratum adjustment
    dose_accuracy: float
    dose_up_bias: float  # share of dose errors that go one band up rather than down
    hallucination: float


ARM_PROFILES: dict[str, ArmProfile] = {
    "SFT-sim": ArmProfile(0.80, 0.80, 0.5, 0.03),
    "DPO-sim": ArmProfile(0.75, 0.75, 0.5, 0.05),
    "GRPO-sim": ArmProfile(0.90, 0.84, 0.9, 0.15),
    "ICL-sim": ArmProfile(0.62, 0.62, 0.5, 0.10),
}
# Harder cases are harder for every arm; the adjustments roughly cancel over the whole set.
STRATUM_ACCURACY_SHIFT: dict[str, float] = {
    "General": 0.03,
    "Confusion": -0.10,
    "Human Enhancement": 0.0,
}


_WRONG_STRATEGY: dict[str, tuple[str, ...]] = {
    "IUI": ("IVF",),
    "IVF": ("ICSI", "ICSI", "IUI", "PGT-A"),
    "ICSI": ("IVF", "PGT-A"),
    "PGT-A": ("IVF", "ICSI"),
    "PGT-M": ("ICSI", "PGT-A"),
    "PGT-SR": ("PGT-A", "ICSI"),
}
_WRONG_PROTOCOL: dict[str, tuple[str, ...]] = {
    "GnRH antagonist": ("long agonist", "long agonist", "PPOS", "short agonist"),
    "long agonist": ("GnRH antagonist",),
    "short agonist": ("GnRH antagonist", "mild/natural"),
    "PPOS": ("GnRH antagonist",),
    "mild/natural": ("GnRH antagonist", "short agonist"),
}


def _normalise_dx(labels: set[str]) -> list[str]:
    if len(labels) > 1:
        labels = labels - {"unexplained"}
    return sorted_labels(labels or {"unexplained"})


def _wrong_diagnosis(rng: random.Random, f: dict, truth: list[str]) -> list[str]:
    current = set(truth)
    candidates: list[set[str]] = []
    if len(current) >= 2:
        candidates += [current - {label} for label in truth]
    swaps = {"male_factor_mild": "male_factor_severe", "male_factor_severe": "male_factor_mild"}
    for label in truth:
        if label in swaps:
            candidates.append(current - {label} | {swaps[label]})
    if len(current) == 1 and "unexplained" not in current:
        candidates.append({"unexplained"})
    additions = (
        ("diminished_ovarian_reserve", f["age"] >= 35),
        (
            "male_factor_mild",
            f["semen_normal_forms_pct"] <= 5 or f["total_progressive_motile_count_m"] < 20,
        ),
        ("tubal_factor", f["tubal_findings"] == "unilateral occlusion"),
        ("recurrent_pregnancy_loss", f["pregnancy_losses"] == 1),
        ("ovulatory_dysfunction_pcos", f["afc"] >= 20),
        ("endometriosis", True),
    )
    candidates += [current | {label} for label, plausible in additions if plausible]
    options = [dx for dx in (_normalise_dx(c) for c in candidates) if dx != truth]
    return rng.choice(options)


def _shift_dose(rng: random.Random, band: str, up_bias: float) -> str:
    step = DOSE_BANDS.index(band)
    up = rng.random() < up_bias
    if step == 0 or (up and step < len(DOSE_BANDS) - 1):
        return DOSE_BANDS[step + 1]
    return DOSE_BANDS[step - 1]


def _simulated_decision(rng: random.Random, case: dict, profile: ArmProfile) -> dict:
    f = case["fields"]
    truth = case.get("ground_truth") or derive_ground_truth(f)
    shift = STRATUM_ACCURACY_SHIFT.get(case["stratum"], 0.0)
    accuracy = clip(profile.accuracy + shift, 0.05, 0.99)
    dose_accuracy = clip(profile.dose_accuracy + shift, 0.05, 0.99)
    decision = {layer: truth[layer] for layer in LAYERS}
    if rng.random() >= accuracy:
        decision["diagnosis"] = _wrong_diagnosis(rng, f, truth["diagnosis"])
    if rng.random() >= accuracy:
        decision["art_strategy"] = rng.choice(_WRONG_STRATEGY[truth["art_strategy"]])
    if rng.random() >= accuracy:
        decision["protocol"] = rng.choice(_WRONG_PROTOCOL[truth["protocol"]])
    if rng.random() >= dose_accuracy:
        decision["dose_band"] = _shift_dose(rng, truth["dose_band"], profile.dose_up_bias)
    return decision


def final_block(decision: dict) -> str:
    """The four closing lines every simulated response ends with, one per decision layer."""
    return "\n".join(
        f"{LAYER_TITLES[layer]}: "
        + ("; ".join(decision[layer]) if layer == "diagnosis" else decision[layer])
        for layer in LAYERS
    )


def parse_final_block(text: str) -> dict:
    """The decision in the four closing lines of a simulated response (see final_block)."""
    by_title = {title: layer for layer, title in LAYER_TITLES.items()}
    decision: dict = {}
    for line in text.rstrip("\n").split("\n")[-len(LAYERS) :]:
        title, _, value = line.partition(": ")
        layer = by_title[title]
        decision[layer] = value.split("; ") if layer == "diagnosis" else value
    return decision


def _hallucinated_values(rng: random.Random, f: dict) -> dict[str, str]:
    # One value stated wrongly is the hallucination raters are asked to catch.
    v = phrase_values(f)
    key = rng.choice(("amh", "amh", "afc", "fsh"))
    if key == "amh":
        factor = rng.choice((0.3, 0.4, 2.5, 3.0))
        v["amh"] = number_text(round(max(0.1, f["amh_ng_ml"] * factor), 2))
        if v["amh"] == number_text(f["amh_ng_ml"]):
            v["amh"] = number_text(round(f["amh_ng_ml"] + 1.5, 2))
    elif key == "afc":
        v["afc"] = str(max(1, f["afc"] + rng.choice((-6, 8, 11))))
        if v["afc"] == str(f["afc"]):
            v["afc"] = str(f["afc"] + 8)
    else:
        v["fsh"] = number_text(round(f["fsh_iu_l"] + rng.choice((5.5, 7.2, 9.1)), 1))
    return v


def _reserve_word(f: dict, decision: dict) -> str:
    if "diminished_ovarian_reserve" in decision["diagnosis"]:
        return "reduced reserve"
    return "high reserve" if assess(f).high_responder else "normal reserve"


def _tubes_uterus(f: dict) -> str:
    text = f"tubes {f['tubal_findings']}, uterus {f['uterine_findings']}"
    if f["endometriosis_stage"] != "none":
        text += f", stage {f['endometriosis_stage']} endometriosis"
    return text


def _semen_brief(f: dict) -> str:
    if f["semen_concentration_m_per_ml"] == 0:
        return "azoospermia"
    return (
        f"{number_text(f['semen_concentration_m_per_ml'])} M/mL, "
        f"{f['semen_progressive_motility_pct']}% progressive, "
        f"{f['semen_normal_forms_pct']}% normal forms, "
        f"TPMC {number_text(f['total_progressive_motile_count_m'])} M"
    )


def _history_brief(f: dict) -> str:
    parts = []
    if f["prior_iui_cycles"]:
        parts.append(f"{f['prior_iui_cycles']} IUI")
    if f["prior_ivf_cycles"]:
        parts.append(f"{f['prior_ivf_cycles']} IVF")
    if f["failed_good_quality_transfers"]:
        parts.append(f"{f['failed_good_quality_transfers']} failed good-quality transfers")
    if f["prior_poor_response"]:
        parts.append("previous poor response")
    if f["prior_fertilisation_failure"]:
        parts.append("previous fertilisation failure")
    if f["pregnancy_losses"]:
        parts.append(f"{f['pregnancy_losses']} pregnancy losses")
    if f["carrier_type"] != "none":
        parts.append(f["carrier_status"])
    return ", ".join(parts) or "no previous treatment"


def _write_structured(rng: random.Random, f: dict, decision: dict, hallucinate: bool) -> str:
    v = _hallucinated_values(rng, f) if hallucinate else phrase_values(f)
    strategy, chosen_protocol, band = (decision[k] for k in LAYERS[1:])
    dose = dose_number(rng, band, strategy)
    return "\n".join(
        (
            f"Assessment: {v['age']}-year-old woman with {v['years']} of {f['infertility_type']} "
            f"infertility; working diagnosis: {dx_words(decision['diagnosis'])}.",
            "Key findings:",
            f"- Ovarian reserve: AMH {v['amh']} ng/mL, AFC {v['afc']}, day-3 FSH {v['fsh']} IU/L "
            f"({_reserve_word(f, decision)}).",
            f"- Tubes and uterus: {_tubes_uterus(f)}.",
            f"- Semen: {_semen_brief(f)}.",
            f"- History: {_history_brief(f)}.",
            f"Plan: {STRATEGY_PHRASES[strategy]}, {PROTOCOL_PHRASES[chosen_protocol]}, "
            f"start {dose} IU/day.",
            "Rationale:",
            f"1. Strategy: {strategy_reason(f, strategy, v)}.",
            f"2. Protocol: {protocol_reason(f, chosen_protocol, strategy, v)}.",
            f"3. Dose: {dose_reason(f, band, v)}.",
            "",
            final_block(decision),
        )
    )


_COUNSELLING_POINTS: tuple[str, ...] = (
    "realistic expectations: success rates per cycle fall with age, so cumulative chances matter",
    "the symptoms of ovarian hyperstimulation and when to call the clinic",
    "lifestyle: stopping smoking, limiting alcohol and keeping a healthy weight",
    "emotional support, since treatment can be stressful for both partners",
    "the number of embryos to transfer and the risks of a multiple pregnancy",
    "costs and how many cycles the couple feel able to try",
    "folic acid before conception",
)


def _write_warm(rng: random.Random, f: dict, decision: dict, hallucinate: bool) -> str:
    v = _hallucinated_values(rng, f) if hallucinate else phrase_values(f)
    strategy, chosen_protocol, band = (decision[k] for k in LAYERS[1:])
    dose = dose_number(rng, band, strategy)
    points = rng.sample(_COUNSELLING_POINTS, 3)
    opening = rng.choice(
        (
            "Thank you for sharing this case.",
            "Thank you, this is a thoughtful case to discuss.",
            "I appreciate the detail in this case.",
        )
    )
    return "\n".join(
        (
            f"{opening} This couple has been trying for {v['years']}, which is understandably "
            "hard, and it is worth acknowledging that before we talk about options.",
            "",
            f"Looking at the findings, an AMH of {v['amh']} ng/mL with an antral follicle count "
            f"of {v['afc']} suggests {_reserve_word(f, decision)} for her age of {v['age']}. "
            f"The semen analysis shows {_semen_brief(f)}, and the workup shows "
            f"{_tubes_uterus(f)}. Taken together, the picture fits "
            f"{dx_words(decision['diagnosis'])}.",
            "",
            f"I would gently suggest {STRATEGY_PHRASES[strategy]}. My reasoning: "
            f"{strategy_reason(f, strategy, v)}. For stimulation, a "
            f"{PROTOCOL_PHRASES[chosen_protocol]} seems reasonable, starting at around {dose} IU "
            f"per day ({protocol_reason(f, chosen_protocol, strategy, v)}). That said, other "
            "approaches could also be reasonable, and this may need adjusting as the cycle goes.",
            "",
            "Points that may be worth discussing with the couple:",
            *(f"- {point}" for point in points),
            "",
            "The final decision should of course be made together with the couple after a full "
            "discussion.",
            "",
            final_block(decision),
        )
    )


_UNSUPPORTED_CLAIMS: tuple[str, ...] = (
    "inhibin B 38 pg/mL",
    "endometrial thickness 6 mm",
    "day-3 E2 85 pg/mL",
    "sperm DNA fragmentation 34%",
    "prolactin 41 ng/mL",
)


def _write_terse(rng: random.Random, f: dict, decision: dict, hallucinate: bool) -> str:
    v = phrase_values(f)
    strategy, chosen_protocol, band = (decision[k] for k in LAYERS[1:])
    why = f"age {v['age']}, AMH {v['amh']}, AFC {v['afc']}"
    if hallucinate:
        kind = rng.randrange(3)
        if kind == 0:
            why += f", {rng.choice(_UNSUPPORTED_CLAIMS)}"
        elif kind == 1:
            why = f"age {v['age']}, AMH {_hallucinated_values(rng, f)['amh']}, AFC {v['afc']}"
        elif "diminished_ovarian_reserve" in decision["diagnosis"]:
            why += ", reserve adequate"
        else:
            why += ", reserve poor"
    return "\n".join(
        (
            f"{'; '.join(decision['diagnosis'])} -> {strategy}, {chosen_protocol}, {band}.",
            f"Why: {why}.",
            "",
            final_block(decision),
        )
    )


_TEMPLATE_ECHOES: tuple[tuple[str, str], ...] = (
    (
        "hydrosalpinx",
        "As with the bilateral hydrosalpinx in the example, salpingectomy comes first.",
    ),
    ("azoospermia", "As in the azoospermia example, sperm must be retrieved surgically."),
    ("pcos", "As in the PCOS example, an agonist trigger avoids OHSS."),
    ("translocation", "As in the translocation example, embryos are biopsied."),
)


def _write_template(rng: random.Random, f: dict, decision: dict, hallucinate: bool) -> str:
    v = _hallucinated_values(rng, f) if hallucinate else phrase_values(f)
    strategy, chosen_protocol, band = (decision[k] for k in LAYERS[1:])
    explanation = (
        f"Based on the findings, the recommended approach is {STRATEGY_PHRASES[strategy]}, "
        f"using a {PROTOCOL_PHRASES[chosen_protocol]}."
    )
    if rng.random() < 0.2:
        present = {
            "hydrosalpinx": f["tubal_findings"] == "hydrosalpinx",
            "azoospermia": f["semen_concentration_m_per_ml"] == 0,
            "pcos": assess(f).pcos,
            "translocation": "translocation" in f["carrier_status"],
        }
        echoes = [text for topic, text in _TEMPLATE_ECHOES if not present[topic]]
        explanation += " " + rng.choice(echoes)
    return "\n".join(
        (
            f"Case: {v['age']} years, AMH {v['amh']} ng/mL, AFC {v['afc']}, "
            f"FSH {v['fsh']} IU/L, TPMC {v['tpmc']} M.",
            f"Answer: {strategy} with {chosen_protocol}, {band}.",
            f"Explanation: {explanation}",
            "",
            final_block(decision),
        )
    )


_WRITERS: dict[str, Callable[[random.Random, dict, dict, bool], str]] = {
    "SFT-sim": _write_structured,
    "DPO-sim": _write_warm,
    "GRPO-sim": _write_terse,
    "ICL-sim": _write_template,
}


def generate_simulated_responses(cases: list[dict], *, seed: int) -> list[dict]:
    """One simulated response per case and arm, in the response import format.

    Template text with labels drawn at each arm's documented error rate, not model output.
    """
    rows = []
    for case in cases:
        for arm in SIMULATED_ARMS:
            profile = ARM_PROFILES[arm]
            rng = seeded_rng(seed, "response", case["case_id"], arm)
            decision = _simulated_decision(rng, case, profile)
            hallucinate = rng.random() < profile.hallucination
            text = _WRITERS[arm](rng, case["fields"], decision, hallucinate)
            rows.append(
                {
                    "case_id": case["case_id"],
                    "arm": arm,
                    "sample": 0,
                    "text": text,
                    "decision": decision,
                }
            )
    return rows
