"""The default decision vocabulary for assisted-reproduction (ART) studies.

A study copies these into its own configuration when it is created, so a study team can later
rename or extend labels without touching code. Imports, the synthetic generator and the automatic
metrics all validate against the study's copy.
"""

from __future__ import annotations

from typing import Final

STRATA: Final[tuple[str, ...]] = ("General", "Confusion", "Human Enhancement")

DIAGNOSIS_LABELS: Final[tuple[str, ...]] = (
    "unexplained",
    "tubal_factor",
    "male_factor_mild",
    "male_factor_severe",
    "ovulatory_dysfunction_pcos",
    "diminished_ovarian_reserve",
    "endometriosis",
    "uterine_factor",
    "recurrent_pregnancy_loss",
    "recurrent_implantation_failure",
    "monogenic_carrier",
    "chromosomal_rearrangement_carrier",
)
ART_STRATEGIES: Final[tuple[str, ...]] = ("IUI", "IVF", "ICSI", "PGT-A", "PGT-M", "PGT-SR")
PROTOCOLS: Final[tuple[str, ...]] = (
    "GnRH antagonist",
    "long agonist",
    "short agonist",
    "PPOS",
    "mild/natural",
)
DOSE_BANDS: Final[tuple[str, ...]] = ("<=150 IU", "151-225 IU", "226-300 IU")

# layer name -> (multi-label?, allowed labels, human title)
DEFAULT_DECISION_LAYERS: Final[dict[str, dict]] = {
    "diagnosis": {"title": "Diagnosis", "multi": True, "labels": list(DIAGNOSIS_LABELS)},
    "art_strategy": {"title": "ART strategy", "multi": False, "labels": list(ART_STRATEGIES)},
    "protocol": {"title": "Stimulation protocol", "multi": False, "labels": list(PROTOCOLS)},
    "dose_band": {
        "title": "Gonadotropin start dose",
        "multi": False,
        "labels": list(DOSE_BANDS),
    },
}
