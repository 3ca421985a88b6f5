"""The physician's original decision: usually the rule label, with realistic disagreement."""

from __future__ import annotations

import random

from clinic_eval.synthetic.cases import build_narrative, sample_fields
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
    LAYERS,
    assess,
    derive_ground_truth,
    derive_stratum,
    seeded_rng,
)
from clinic_eval.vocabulary import DOSE_BANDS

# Physician disagreement with the derived ground truth, per stratum.
PHYSICIAN_DISAGREEMENT: dict[str, float] = {
    "General": 0.10,
    "Confusion": 0.33,
    "Human Enhancement": 0.08,
}


def _physician_options(
    rng: random.Random, f: dict, truth: dict, stratum: str
) -> list[tuple[float, str, object, str]]:
    # (weight, layer, physician's label, reason); only disagreements a clinician would defend.
    v = phrase_values(f)
    strategy, chosen_protocol = truth["art_strategy"], truth["protocol"]
    step = DOSE_BANDS.index(truth["dose_band"])
    options: list[tuple[float, str, object, str]] = []
    if step < len(DOSE_BANDS) - 1 and strategy != "IUI":
        reason = "one step higher, hoping for a few more oocytes"
        options.append((1.5, "dose_band", DOSE_BANDS[step + 1], reason))
    if step > 0:
        reason = "one step lower to limit OHSS risk" if f["afc"] >= 15 else "cautious start dose"
        options.append((1.0, "dose_band", DOSE_BANDS[step - 1], reason))
    if chosen_protocol == "PPOS":
        options.append((2.0, "protocol", "GnRH antagonist", "antagonist, freeze-all after biopsy"))
    if stratum == "Human Enhancement":
        return options
    if strategy == "IVF":
        if assess(f).male_mild or f["total_progressive_motile_count_m"] < 20:
            reason = f"partner's TPMC {v['tpmc']} M, borderline for conventional IVF, so ICSI"
            options.append(
                (3.0, "art_strategy", "ICSI", reason + " to avoid fertilisation failure")
            )
        else:
            reason = "ICSI to avoid an unexpected total fertilisation failure"
            options.append((1.5, "art_strategy", "ICSI", reason))
    if strategy in ("IVF", "ICSI") and 37 <= f["age"] <= 39:
        history = f["pregnancy_losses"] or f["failed_good_quality_transfers"]
        reason = f"{v['age']} y; after counselling on its limited evidence the couple chose PGT-A"
        options.append((3.0 if history else 1.0, "art_strategy", "PGT-A", reason))
    if strategy == "IUI":
        if f["infertility_years"] >= 2 or f["age"] >= 34:
            reason = f"{v['years']} of trying; anxious couple, keen to go straight to IVF"
        else:
            reason = "the couple declined IUI after counselling and asked for IVF"
        options.append((3.0, "art_strategy", "IVF", reason))
    if chosen_protocol == "GnRH antagonist" and not assess(f).high_responder:
        options.append((2.0, "protocol", "long agonist", "long agonist, easier to schedule"))
    if len(truth["diagnosis"]) >= 2:
        kept = list(truth["diagnosis"])
        kept.remove(rng.choice(kept))
        options.append((1.0, "diagnosis", kept, ""))
    return options


def _physician_decision(
    rng: random.Random, f: dict, truth: dict, stratum: str
) -> tuple[dict, str, str]:
    decision = {layer: truth[layer] for layer in LAYERS}
    options = _physician_options(rng, f, truth, stratum)
    if rng.random() >= PHYSICIAN_DISAGREEMENT[stratum] or not options:
        return decision, "", ""
    _, layer, label, reason = rng.choices(options, weights=[o[0] for o in options])[0]
    decision[layer] = label
    return decision, layer, reason


def _physician_text(
    rng: random.Random, f: dict, decision: dict, changed_layer: str, changed_reason: str
) -> str:
    v = phrase_values(f)
    strategy, chosen_protocol, band = (decision[k] for k in LAYERS[1:])
    reasons = {
        "art_strategy": strategy_reason(f, strategy, v),
        "protocol": protocol_reason(f, chosen_protocol, strategy, v),
        "dose_band": dose_reason(f, band, v),
    }
    if changed_reason:
        reasons[changed_layer] = changed_reason
    why = "; ".join(r for r in reasons.values() if not r.startswith("standard"))
    dose = dose_number(rng, band, strategy)
    plan = f"{STRATEGY_PHRASES[strategy]}, {PROTOCOL_PHRASES[chosen_protocol]}, start {dose} IU"
    key = f"{v['age']} y, AMH {v['amh']}, AFC {v['afc']}"
    template = rng.randrange(3)
    if template == 0:
        return f"Plan: {plan}. Reasoning: {key}; {why}."
    if template == 1:
        return f"Impression: {dx_words(decision['diagnosis'])}. Plan {plan}. Why: {why} ({key})."
    return f"{plan[0].upper() + plan[1:]}. {why[0].upper() + why[1:]}. Key values: {key}."


def _generate_case(seed: int, index: int) -> dict:
    rng = seeded_rng(seed, "case", index)
    fields = sample_fields(rng)
    truth = derive_ground_truth(fields)
    stratum = derive_stratum(fields)
    narrative = build_narrative(fields, rng)
    decision, layer, reason = _physician_decision(rng, fields, truth, stratum)
    return {
        "case_id": f"SYN-{index:05d}",
        "stratum": stratum,
        "narrative": narrative,
        "fields": fields,
        "ground_truth": truth,
        "original_decision": {
            "text": _physician_text(rng, fields, decision, layer, reason),
            "decision": decision,
            "author": f"dr-{rng.randint(1, 12):02d}",
        },
    }


def generate_cases(*, n: int, seed: int) -> list[dict]:
    """n synthetic cases in the case import format; case i depends only on (seed, i)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    return [_generate_case(seed, index) for index in range(1, n + 1)]
