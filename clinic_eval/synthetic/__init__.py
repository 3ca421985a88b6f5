"""Synthetic, de-identified assisted-reproduction (ART) cases for demos and tests.

Nothing here describes a real patient: every value is drawn from a seeded random generator. The
labelling rules are simplified teaching rules (docs/synthetic-data.md gives each threshold and its
source), not clinical advice. Standard library only, so it runs without Django.

- ``rules``: thresholds and the ground truth and stratum they give for a case's fields
- ``cases`` and ``physician``: sampled fields, narratives and the physician's original decision
- ``phrases``: reasoning text shared by the physician and the simulated arms
- ``responses``: the four simulated demo arms
- ``report``: the distribution summary and deterministic JSON Lines output
"""

from __future__ import annotations

from clinic_eval.synthetic.physician import generate_cases
from clinic_eval.synthetic.report import dumps_jsonl, summarize
from clinic_eval.synthetic.responses import (
    SIMULATED_ARMS,
    final_block,
    generate_simulated_responses,
    parse_final_block,
)
from clinic_eval.synthetic.rules import (
    LAYERS,
    confusion_reasons,
    derive_ground_truth,
    derive_stratum,
)

__all__ = [
    "LAYERS",
    "SIMULATED_ARMS",
    "confusion_reasons",
    "derive_ground_truth",
    "derive_stratum",
    "dumps_jsonl",
    "final_block",
    "generate_cases",
    "generate_simulated_responses",
    "parse_final_block",
    "summarize",
]
