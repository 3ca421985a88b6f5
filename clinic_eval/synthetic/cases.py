"""Sampling plausible, de-identified case fields and writing their narratives."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from clinic_eval.synthetic.rules import (
    CHROMOSOMAL_BALANCED,
    CHROMOSOMAL_NORMAL_VARIANT,
    MONOGENIC_AT_RISK,
    MONOGENIC_NOT_AT_RISK,
    clip,
    number_text,
    weighted_pick,
    years_text,
)


def _amh_for_age(rng: random.Random, age: float) -> float:
    # Median AMH falls roughly exponentially with age, faster after 37.
    median = 3.0 * math.exp(-0.10 * (age - 30) - 0.05 * max(0.0, age - 37))
    return clip(median * math.exp(rng.gauss(0.0, 0.5)), 0.05, 20.0)


def _afc_for_amh(rng: random.Random, amh: float) -> float:
    return clip(7.5 * amh**0.7 * math.exp(rng.gauss(0.0, 0.2)), 0, 60)


def _fsh(rng: random.Random, age: float, amh: float) -> float:
    return clip(5.5 + 0.08 * (age - 30) + 4.0 * max(0.0, 1.5 - amh) + rng.gauss(0, 1.0), 2.5, 25)


def _duration(rng: random.Random, mean_extra: float) -> float:
    return clip(1.0 + rng.gammavariate(1.5, mean_extra / 1.5), 1.0, 12.0)


def _age(rng: random.Random, mean: float, sd: float, low: int = 22, high: int = 45) -> int:
    return int(round(clip(rng.gauss(mean, sd), low, high)))


def _set_reserve(rng: random.Random, f: dict, amh: float | None = None) -> None:
    f["amh_ng_ml"] = _amh_for_age(rng, f["age"]) if amh is None else amh
    f["afc"] = _afc_for_amh(rng, f["amh_ng_ml"])
    f["fsh_iu_l"] = _fsh(rng, f["age"], f["amh_ng_ml"])


def _set_semen(rng: random.Random, f: dict, conc: float, motility: float, forms: float) -> None:
    f["semen_concentration_m_per_ml"] = conc
    f["semen_progressive_motility_pct"] = clip(motility, 0, 75)
    f["semen_normal_forms_pct"] = clip(forms, 0, 20)


def _base(rng: random.Random, age: int) -> dict:
    f: dict = {"age": age, "bmi": clip(rng.gauss(23.0, 3.3), 17.5, 38.0)}
    _set_reserve(rng, f)
    secondary = rng.random() < 0.35
    f.update(
        infertility_type="secondary" if secondary else "primary",
        infertility_years=_duration(rng, 1.5),
        cycle_pattern="oligo-anovulatory" if rng.random() < 0.04 else "regular",
        hyperandrogenism=rng.random() < 0.04,
        tubal_findings=weighted_pick(
            rng, (("patent", 0.90), ("unilateral occlusion", 0.08), ("bilateral occlusion", 0.02))
        ),
        uterine_findings=weighted_pick(
            rng, (("normal", 0.96), ("submucosal fibroid", 0.02), ("intrauterine adhesions", 0.02))
        ),
        endometriosis_stage="none",
        prior_iui_cycles=weighted_pick(rng, ((0, 0.72), (1, 0.12), (2, 0.09), (3, 0.07))),
        prior_ivf_cycles=0,
        prior_poor_response=False,
        prior_fertilisation_failure=False,
        failed_good_quality_transfers=0,
        pregnancy_losses=1 if secondary and rng.random() < 0.3 else 0,
        semen_volume_ml=clip(rng.gauss(3.0, 0.9), 1.5, 6.5),
        carrier_status="none",
        carrier_type="none",
    )
    # Most partners are normozoospermic; a few have an isolated borderline parameter.
    if rng.random() < 0.08:
        _set_semen(rng, f, rng.uniform(17, 40), rng.gauss(36, 6), rng.uniform(2, 4))
    else:
        conc = max(17.0, 55.0 * math.exp(rng.gauss(0, 0.45)))
        _set_semen(rng, f, min(conc, 180.0), max(31.0, rng.gauss(46, 8)), rng.uniform(4.5, 14))
    return f


def _add_ivf_history(rng: random.Random, f: dict, cycles: int | None = None) -> None:
    f["prior_ivf_cycles"] = cycles if cycles is not None else rng.choice((1, 1, 1, 2, 2, 3))


def _arch_unexplained(rng: random.Random) -> dict:
    f = _base(rng, _age(rng, 31.5, 3.8, 23, 41))
    f["infertility_years"] = _duration(rng, 1.2)
    return f


def _arch_tubal(rng: random.Random) -> dict:
    f = _base(rng, _age(rng, 32.5, 4.5))
    f["tubal_findings"] = weighted_pick(
        rng, (("bilateral occlusion", 0.55), ("hydrosalpinx", 0.35), ("unilateral occlusion", 0.1))
    )
    if rng.random() < 0.6:
        f["infertility_type"] = "secondary"
    return f


def _arch_pcos(rng: random.Random) -> dict:
    f = _base(rng, _age(rng, 29.0, 3.5, 22, 38))
    afc = clip(rng.gauss(38, 10), 18, 70)
    amh = (afc / 7.5) ** (1 / 0.7) * math.exp(rng.gauss(0, 0.2))
    f.update(
        bmi=clip(rng.gauss(27.0, 4.5), 18.5, 40.0),
        amh_ng_ml=clip(amh, 2.5, 20.0),
        afc=afc,
        fsh_iu_l=clip(rng.gauss(5.8, 1.1), 3.0, 9.0),
        cycle_pattern="oligo-anovulatory" if rng.random() < 0.85 else "regular",
        hyperandrogenism=rng.random() < 0.6,
    )
    return f


def _arch_male_mild(rng: random.Random) -> dict:
    f = _base(rng, _age(rng, 32.0, 4.0))
    _set_semen(rng, f, rng.uniform(9, 30), rng.gauss(29, 6), rng.uniform(1.5, 6))
    return f


def _arch_male_severe(rng: random.Random) -> dict:
    f = _base(rng, _age(rng, 32.0, 4.0))
    if rng.random() < 0.7:
        _set_semen(rng, f, rng.uniform(0.1, 4.9), rng.gauss(20, 7), rng.uniform(0, 3))
    else:
        # Asthenozoospermia: concentration fine, too few progressive sperm.
        _set_semen(rng, f, rng.uniform(16, 30), rng.uniform(3, 10), rng.uniform(1, 4))
        f["semen_volume_ml"] = clip(rng.gauss(2.2, 0.5), 1.2, 3.0)
    if rng.random() < 0.1:
        _add_ivf_history(rng, f, 1)
    return f


def _arch_azoospermia(rng: random.Random) -> dict:
    f = _base(rng, _age(rng, 31.0, 4.0))
    _set_semen(rng, f, 0.0, 0.0, 0.0)
    return f


def _arch_low_reserve(rng: random.Random) -> dict:
    f = _base(rng, _age(rng, 39.0, 3.2, 30, 45))
    amh = clip(rng.uniform(0.08, 1.05), 0.05, 1.05)
    _set_reserve(rng, f, amh)
    f["afc"] = clip(f["afc"] - rng.uniform(0, 2), 1, 10)
    f["infertility_years"] = _duration(rng, 2.0)
    if rng.random() < 0.45:
        _add_ivf_history(rng, f)
        f["prior_poor_response"] = rng.random() < 0.6
    return f


def _arch_endometriosis(rng: random.Random) -> dict:
    f = _base(rng, _age(rng, 32.5, 4.0))
    severe = rng.random() < 0.55
    f["endometriosis_stage"] = "III-IV" if severe else "I-II"
    if severe:
        # Endometriomas and their surgery lower the reserve.
        _set_reserve(rng, f, _amh_for_age(rng, f["age"]) * rng.uniform(0.4, 0.8))
    if rng.random() < 0.15:
        f["uterine_findings"] = "adenomyosis"
    return f


def _arch_uterine(rng: random.Random) -> dict:
    f = _base(rng, _age(rng, 33.5, 4.5))
    f["uterine_findings"] = weighted_pick(
        rng,
        (
            ("submucosal fibroid", 0.3),
            ("uterine septum", 0.2),
            ("intrauterine adhesions", 0.25),
            ("adenomyosis", 0.25),
        ),
    )
    return f


def _arch_rpl(rng: random.Random) -> dict:
    f = _base(rng, _age(rng, 34.5, 4.5, 24, 44))
    f["pregnancy_losses"] = weighted_pick(rng, ((2, 0.55), (3, 0.3), (4, 0.15)))
    f["infertility_type"] = "secondary"
    if rng.random() < 0.3:
        _add_ivf_history(rng, f)
    return f


def _arch_rif(rng: random.Random) -> dict:
    f = _base(rng, _age(rng, 35.0, 4.0, 25, 44))
    _add_ivf_history(rng, f, rng.choice((2, 2, 3, 4)))
    f["failed_good_quality_transfers"] = rng.choice((3, 3, 4, 5))
    return f


def _arch_monogenic(rng: random.Random) -> dict:
    f = _base(rng, _age(rng, 30.5, 4.0, 22, 42))
    pool = MONOGENIC_NOT_AT_RISK if rng.random() < 0.12 else MONOGENIC_AT_RISK
    f.update(carrier_status=rng.choice(pool), carrier_type="monogenic")
    return f


def _arch_chromosomal(rng: random.Random) -> dict:
    f = _base(rng, _age(rng, 31.0, 4.0, 22, 42))
    f.update(carrier_status=rng.choice(CHROMOSOMAL_BALANCED), carrier_type="chromosomal")
    # Balanced carriers usually present after losses.
    if rng.random() < 0.6:
        f["pregnancy_losses"] = rng.choice((1, 2, 2, 3))
    return f


def _arch_inv9(rng: random.Random) -> dict:
    f = _base(rng, _age(rng, 32.0, 4.0))
    f.update(carrier_status=CHROMOSOMAL_NORMAL_VARIANT[0], carrier_type="chromosomal")
    if rng.random() < 0.4:
        f["pregnancy_losses"] = rng.choice((1, 2))
    return f


def _arch_boundary_male(rng: random.Random) -> dict:
    f = _base(rng, _age(rng, 32.5, 4.0))
    _set_semen(rng, f, rng.uniform(4.5, 10), rng.gauss(32, 6), rng.uniform(2, 5))
    f["semen_volume_ml"] = clip(rng.gauss(3.0, 0.8), 1.5, 5.0)
    return f


def _arch_boundary_pgt_a(rng: random.Random) -> dict:
    f = _base(rng, rng.choice((36, 37, 37, 38, 38, 39)))
    if rng.random() < 0.5:
        f["pregnancy_losses"] = rng.choice((2, 2, 3))
        f["infertility_type"] = "secondary"
    else:
        _add_ivf_history(rng, f, rng.choice((2, 3)))
        f["failed_good_quality_transfers"] = rng.choice((2, 3, 3, 4))
    return f


def _arch_boundary_reserve(rng: random.Random) -> dict:
    f = _base(rng, _age(rng, 36.5, 2.0, 32, 40))
    _set_reserve(rng, f, rng.uniform(0.85, 1.6))
    f["afc"] = max(f["afc"], rng.uniform(6, 10))
    if rng.random() < 0.6:
        _add_ivf_history(rng, f, 1)
    return f


def _arch_boundary_unexplained(rng: random.Random) -> dict:
    if rng.random() < 0.5:
        f = _base(rng, rng.choice((35, 36, 37)))
        f["infertility_years"] = _duration(rng, 0.8)
    else:
        f = _base(rng, _age(rng, 31.0, 3.0, 24, 37))
        f["infertility_years"] = rng.choice((2.5, 3.0, 3.0, 3.5))
    return f


def _arch_high_responder(rng: random.Random) -> dict:
    f = _base(rng, _age(rng, 29.0, 3.0, 22, 36))
    _set_reserve(rng, f, rng.uniform(3.6, 8.0))
    if rng.random() < 0.5:
        f["tubal_findings"] = "bilateral occlusion"
    return f


ARCHETYPES: tuple[tuple[str, float, Callable[[random.Random], dict]], ...] = (
    ("unexplained", 13.0, _arch_unexplained),
    ("tubal", 10.0, _arch_tubal),
    ("pcos", 9.0, _arch_pcos),
    ("male_factor_mild", 7.0, _arch_male_mild),
    ("male_factor_severe", 5.5, _arch_male_severe),
    ("azoospermia", 2.0, _arch_azoospermia),
    ("diminished_reserve", 9.0, _arch_low_reserve),
    ("endometriosis", 7.0, _arch_endometriosis),
    ("uterine", 5.0, _arch_uterine),
    ("recurrent_pregnancy_loss", 5.0, _arch_rpl),
    ("recurrent_implantation_failure", 5.0, _arch_rif),
    ("monogenic_carrier", 2.6, _arch_monogenic),
    ("chromosomal_carrier", 2.2, _arch_chromosomal),
    ("boundary_male", 3.0, _arch_boundary_male),
    ("boundary_pgt_a_age", 2.5, _arch_boundary_pgt_a),
    ("boundary_reserve", 3.5, _arch_boundary_reserve),
    ("boundary_unexplained", 3.0, _arch_boundary_unexplained),
    ("inv9_normal_variant", 0.8, _arch_inv9),
    ("high_responder", 3.0, _arch_high_responder),
)


def _finalise(f: dict) -> dict:
    # Rounding happens here, before any rule reads the fields, so that the labels match exactly
    # what a rater sees; the dict literal fixes the published key order.
    if f["pregnancy_losses"] > 0:
        f["infertility_type"] = "secondary"
    # Treatment takes time: a couple with several cycles behind them has not tried for one year.
    history_years = 1.0 + 0.25 * f["prior_iui_cycles"] + 0.5 * f["prior_ivf_cycles"]
    f["infertility_years"] = max(f["infertility_years"], history_years)
    if f["prior_ivf_cycles"] == 0:
        f["prior_poor_response"] = False
        f["prior_fertilisation_failure"] = False
        f["failed_good_quality_transfers"] = 0
    volume = round(f["semen_volume_ml"], 1)
    conc = round(f["semen_concentration_m_per_ml"], 1)
    motility = round(f["semen_progressive_motility_pct"])
    forms = round(f["semen_normal_forms_pct"])
    if conc == 0:
        motility, forms = 0, 0
    return {
        "age": int(f["age"]),
        "bmi": round(f["bmi"], 1),
        "amh_ng_ml": round(f["amh_ng_ml"], 2),
        "afc": int(round(f["afc"])),
        "fsh_iu_l": round(f["fsh_iu_l"], 1),
        "infertility_type": f["infertility_type"],
        "infertility_years": round(f["infertility_years"] * 2) / 2,
        "cycle_pattern": f["cycle_pattern"],
        "hyperandrogenism": bool(f["hyperandrogenism"]),
        "tubal_findings": f["tubal_findings"],
        "uterine_findings": f["uterine_findings"],
        "endometriosis_stage": f["endometriosis_stage"],
        "prior_iui_cycles": int(f["prior_iui_cycles"]),
        "prior_ivf_cycles": int(f["prior_ivf_cycles"]),
        "prior_poor_response": bool(f["prior_poor_response"]),
        "prior_fertilisation_failure": bool(f["prior_fertilisation_failure"]),
        "failed_good_quality_transfers": int(f["failed_good_quality_transfers"]),
        "pregnancy_losses": int(f["pregnancy_losses"]),
        "semen_volume_ml": volume,
        "semen_concentration_m_per_ml": conc,
        "semen_progressive_motility_pct": int(motility),
        "semen_normal_forms_pct": int(forms),
        "total_progressive_motile_count_m": round(volume * conc * motility / 100, 1),
        "carrier_status": f["carrier_status"],
        "carrier_type": f["carrier_type"],
    }


def sample_fields(rng: random.Random) -> dict:
    names = [name for name, _, _ in ARCHETYPES]
    weights = [weight for _, weight, _ in ARCHETYPES]
    builders = {name: build for name, _, build in ARCHETYPES}
    fields = builders[rng.choices(names, weights=weights)[0]](rng)
    # Small independent chance of a prior fertilisation failure after conventional IVF.
    if fields["prior_ivf_cycles"] and rng.random() < 0.08:
        fields["prior_fertilisation_failure"] = True
    return _finalise(fields)


# --- Narrative --------------------------------------------------------------------------------


def _reserve_sentence(f: dict, rng: random.Random) -> str:
    amh, afc, fsh = number_text(f["amh_ng_ml"]), f["afc"], number_text(f["fsh_iu_l"])
    return rng.choice(
        (
            f"AMH {amh} ng/mL, AFC {afc}, day-3 FSH {fsh} IU/L.",
            f"Ovarian reserve: AMH {amh} ng/mL, antral follicle count {afc}, basal FSH {fsh} IU/L.",
            f"Day-3 FSH {fsh} IU/L, AMH {amh} ng/mL and an AFC of {afc}.",
        )
    )


def _pelvis_sentence(f: dict, rng: random.Random) -> str:
    tubes = {
        "patent": "both tubes patent",
        "unilateral occlusion": "one tube occluded and the other patent",
        "bilateral occlusion": "bilateral tubal occlusion",
        "hydrosalpinx": "a hydrosalpinx",
    }[f["tubal_findings"]]
    cavity = {
        "normal": "a normal uterine cavity",
        "submucosal fibroid": "a submucosal fibroid",
        "uterine septum": "a uterine septum",
        "intrauterine adhesions": "intrauterine adhesions",
        "adenomyosis": "diffuse adenomyosis on ultrasound",
    }[f["uterine_findings"]]
    sentence = rng.choice(("HSG shows {t}, with {c}", "Imaging: {t}; {c}"))
    sentence = sentence.format(t=tubes, c=cavity)
    if f["endometriosis_stage"] != "none":
        sentence += f"; laparoscopy confirmed stage {f['endometriosis_stage']} endometriosis"
    return sentence + "."


def _semen_sentence(f: dict, rng: random.Random) -> str:
    if f["semen_concentration_m_per_ml"] == 0:
        return "Partner's semen analysis shows azoospermia on two samples."
    conc = number_text(f["semen_concentration_m_per_ml"])
    mot, forms = f["semen_progressive_motility_pct"], f["semen_normal_forms_pct"]
    volume, tpmc = (
        number_text(f["semen_volume_ml"]),
        number_text(f["total_progressive_motile_count_m"]),
    )
    return rng.choice(
        (
            f"Partner's semen analysis: {conc} M/mL, progressive motility {mot}%, "
            f"normal forms {forms}% (volume {volume} mL, TPMC {tpmc} M).",
            f"Semen analysis: volume {volume} mL, concentration {conc} M/mL, {mot}% progressive, "
            f"{forms}% normal forms; TPMC {tpmc} M.",
        )
    )


def _history_sentence(f: dict) -> str:
    parts = []
    if f["prior_iui_cycles"]:
        parts.append(f"{f['prior_iui_cycles']} IUI cycle{'s' * (f['prior_iui_cycles'] > 1)}")
    if f["prior_ivf_cycles"]:
        n = f["prior_ivf_cycles"]
        ivf = f"{n} IVF cycle{'s' * (n > 1)}"
        details = []
        if f["prior_poor_response"]:
            details.append("poor response with 3 or fewer oocytes")
        if f["prior_fertilisation_failure"]:
            details.append("total fertilisation failure after conventional insemination")
        if f["failed_good_quality_transfers"]:
            k = f["failed_good_quality_transfers"]
            details.append(f"{k} good-quality embryo transfer{'s' * (k > 1)} without implantation")
        parts.append(ivf + (f" ({'; '.join(details)})" if details else ""))
    losses = f["pregnancy_losses"]
    loss_text = f"{losses} first-trimester pregnancy loss{'es' * (losses > 1)}" if losses else ""
    sentence = "Previous treatment: " + " and ".join(parts) if parts else "No previous treatment"
    return sentence + (f"; {loss_text}." if losses else ".")


def _genetics_sentence(f: dict) -> str:
    if f["carrier_type"] == "monogenic":
        return f"Carrier screening: {f['carrier_status']}."
    if f["carrier_type"] == "chromosomal":
        return f"Karyotype: {f['carrier_status']}."
    return ""


def build_narrative(f: dict, rng: random.Random) -> str:
    cycles = "regular cycles" if f["cycle_pattern"] == "regular" else "oligo-anovulatory cycles"
    if f["hyperandrogenism"]:
        cycles += " and clinical hyperandrogenism"
    years, kind = years_text(f["infertility_years"]), f["infertility_type"]
    bmi = number_text(f["bmi"])
    opening = rng.choice(
        (
            f"{f['age']}-year-old woman (BMI {bmi}) with {years} of {kind} "
            f"infertility and {cycles}.",
            f"A {f['age']}-year-old woman, BMI {bmi}, presents with {kind} "
            f"infertility of {years} and {cycles}.",
            f"Woman aged {f['age']} years, BMI {bmi}; {kind} infertility for {years}, {cycles}.",
        )
    )
    sentences = [
        opening,
        _reserve_sentence(f, rng),
        _pelvis_sentence(f, rng),
        _semen_sentence(f, rng),
        _history_sentence(f),
        _genetics_sentence(f),
    ]
    return " ".join(s for s in sentences if s)
