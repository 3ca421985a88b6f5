"""The distribution summary and deterministic JSON Lines output."""

from __future__ import annotations

import json
from collections import Counter

from clinic_eval.synthetic.responses import SIMULATED_ARMS
from clinic_eval.synthetic.rules import LAYER_TITLES, LAYERS
from clinic_eval.vocabulary import ART_STRATEGIES, DIAGNOSIS_LABELS, DOSE_BANDS, PROTOCOLS, STRATA


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:5.1f}%" if whole else "   - "


def _count_block(title: str, labels: tuple[str, ...], counts: Counter, total: int) -> list[str]:
    width = max(len(label) for label in labels)
    lines = [title]
    lines += [
        f"  {label:<{width}}  {counts[label]:6d}  {_pct(counts[label], total)}" for label in labels
    ]
    return lines


def summarize(cases: list[dict], responses: list[dict] | None = None) -> str:
    """Counts per stratum and label, physician disagreement and, given responses, arm accuracy."""
    total = len(cases)
    truths = {case["case_id"]: case["ground_truth"] for case in cases}
    lines = [f"Synthetic cases: {total}"]
    lines += _count_block("Stratum", STRATA, Counter(c["stratum"] for c in cases), total)
    for layer in LAYERS[1:]:
        labels = {"art_strategy": ART_STRATEGIES, "protocol": PROTOCOLS, "dose_band": DOSE_BANDS}
        counts = Counter(c["ground_truth"][layer] for c in cases)
        lines += _count_block(LAYER_TITLES[layer], labels[layer], counts, total)
    dx_counts = Counter(label for c in cases for label in c["ground_truth"]["diagnosis"])
    lines += _count_block("Diagnosis (multi-label, % of cases)", DIAGNOSIS_LABELS, dx_counts, total)

    lines.append("Physician disagreement with ground truth (any layer)")
    width = max(len(s) for s in STRATA)
    for stratum in STRATA:
        in_stratum = [c for c in cases if c["stratum"] == stratum]
        differ = sum(
            1
            for c in in_stratum
            if any(c["original_decision"]["decision"][k] != c["ground_truth"][k] for k in LAYERS)
        )
        share = _pct(differ, len(in_stratum))
        lines.append(f"  {stratum:<{width}}  {differ:6d} / {len(in_stratum):<6d} {share}")

    if responses:
        lines.append("Simulated arm accuracy against ground truth (exact match per layer)")
        lines.append("  " + " " * 9 + "".join(f"{layer:>14}" for layer in LAYERS) + f"{'n':>8}")
        for arm in SIMULATED_ARMS:
            rows = [r for r in responses if r["arm"] == arm and r["case_id"] in truths]
            cells = []
            for layer in LAYERS:
                right = sum(1 for r in rows if r["decision"][layer] == truths[r["case_id"]][layer])
                cells.append(f"{_pct(right, len(rows)):>14}")
            lines.append(f"  {arm:<9}" + "".join(cells) + f"{len(rows):>8}")
    return "\n".join(lines) + "\n"


def dumps_jsonl(rows: list[dict]) -> str:
    """One compact JSON object per line, each ending in a newline; identical input, same bytes."""
    # Keys keep their insertion order, which the generator fixes; sorting would scatter the
    # human-readable order (case_id first) that reviewers rely on.
    return "".join(
        json.dumps(row, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"
        for row in rows
    )
