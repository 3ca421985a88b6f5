"""The results page's span and adjudication panels, shaped from the report (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clinic_eval.results.cells import display_label, estimate_cell, p_value_cell
from clinic_eval.results.sections import clustered_cells

ANY_TITLE = "Any span"


def _rate(row: Mapping[str, Any] | None, *, percent: bool = True, digits: int = 2) -> Any:
    if not row:
        return None
    return estimate_cell(
        row.get("rate"), row.get("rate_low"), row.get("rate_high"), percent=percent, digits=digits
    )


def spans_section(report: Mapping[str, Any], alpha: float) -> dict[str, Any] | None:
    """Per arm, the share of rated responses with a span (any, per category, per harm level)
    and spans per 1,000 words; the paired differences with their corrected p-values; and how
    far physicians agree on where the spans are."""
    section = report.get("spans")
    if not section:
        return None
    titles = {c["key"]: c["title"] for c in section.get("categories") or []}
    titles["any"] = ANY_TITLE
    keys = ["any", *(c["key"] for c in section.get("categories") or [])]
    harms = list(section.get("harms") or [])
    shares = {(r["scope"], r["key"], r["arm"]): r for r in section.get("shares") or []}
    density = {(r["key"], r["arm"]): r for r in section.get("per_1000_words") or []}
    arms = sorted({r["arm"] for r in section.get("shares") or []})
    rows = [
        {
            "arm": arm,
            "categories": [
                _rate(shares.get(("any" if key == "any" else "category", key, arm))) for key in keys
            ],
            "harms": [_rate(shares.get(("harm", level, arm))) for level in harms],
            "per_1000": _rate(density.get(("any", arm)), percent=False),
            "responses": (shares.get(("any", "any", arm)) or {}).get("n"),
        }
        for arm in arms
    ]
    # Omissions have no place in the text: they have no density row.
    per_1000 = [
        {
            "title": titles.get(key, display_label(key)),
            "rates": [_rate(density.get((key, arm)), percent=False) for arm in arms],
        }
        for key in keys
        if any((key, arm) in density for arm in arms)
    ]
    pairwise = [
        {
            "title": titles.get(row["key"], display_label(row["key"])),
            "pair": f"{row['arm_a']} vs {row['arm_b']}",
            "n_pairs": row.get("n_pairs"),
            "only_a": row.get("only_a"),
            "only_b": row.get("only_b"),
            "difference": clustered_cells(row, "difference", alpha, percent=True),
        }
        for row in section.get("pairwise") or []
    ]
    agreement = section.get("agreement") or {}
    severe = agreement.get("severe") or {}
    return {
        "counts": section.get("counts") or {},
        "not_estimable": section.get("not_estimable") or "",
        "columns": [titles.get(key, display_label(key)) for key in keys],
        "harm_columns": [display_label(level) for level in harms],
        "arms": arms,
        "rows": rows,
        "per_1000": per_1000,
        "pairwise": pairwise,
        "estimator": section.get("estimator", ""),
        "generalises_to": section.get("generalises_to", ""),
        "f1_definition": section.get("f1_definition", ""),
        "overlap": [
            {
                "title": titles.get(row["key"], display_label(row["key"])),
                "pairs": row.get("pairs"),
                "both_empty": row.get("both_empty"),
                "f1_mean": estimate_cell(row.get("f1_mean"), digits=3),
                "f1_pooled": estimate_cell(row.get("f1_pooled"), digits=3),
            }
            for row in agreement.get("overlap_f1") or []
        ],
        "severe": {
            "responses": severe.get("responses"),
            "marks": severe.get("severe_marks"),
            "observed": estimate_cell(severe.get("observed_agreement"), percent=True),
            "fleiss": estimate_cell(severe.get("fleiss_kappa"), digits=3),
            "fleiss_responses": severe.get("fleiss_responses"),
            "fleiss_raters": severe.get("fleiss_raters_per_response"),
            "cohen": estimate_cell(severe.get("cohen_kappa_mean"), digits=3),
            "cohen_pairs": severe.get("cohen_pairs"),
            "not_estimable": severe.get("not_estimable") or "",
        },
    }


def _endpoint(block: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A primary-endpoint block (``report.primary`` or the adjudicated one) as display cells."""
    if not block:
        return None
    endpoint = list(block.get("endpoint") or [])
    percent = bool(endpoint) and endpoint[0] == "preference"
    if block.get("not_estimable"):
        return {"not_estimable": block["not_estimable"]}
    return {
        "effect": estimate_cell(
            block.get("estimate"), block.get("low"), block.get("high"), percent=percent
        ),
        "p_value": p_value_cell(block.get("p_value")),
        "df": estimate_cell(block.get("df"), digits=1),
        "significant": bool(block.get("significant")),
    }


def adjudication_section(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """Adjudication counts, what fired the rule, the items changed, and the primary endpoint
    on adjudicated judgments beside the raw one."""
    section = report.get("adjudication")
    if not section:
        return None
    items = section.get("items") or []
    return {
        "counts": section.get("counts") or {},
        "triggers": section.get("triggers") or [],
        "changed_means": section.get("changed_means", ""),
        "sensitivity_label": section.get("sensitivity_label", ""),
        "raw": _endpoint(report.get("primary")),
        "adjudicated": _endpoint(section.get("sensitivity_primary")),
        "registered": bool(report.get("primary")),
        "items": [
            {
                "case_id": row.get("case_id"),
                "arm_set": row.get("arm_set"),
                "status": row.get("status"),
                "triggers": "; ".join(row.get("triggers") or []),
                "raw": estimate_cell(row.get("raw"), digits=2),
                "adjudicated": estimate_cell(row.get("adjudicated"), digits=2),
                "changed": row.get("changed"),
            }
            for row in items
        ],
    }
