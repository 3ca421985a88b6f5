from __future__ import annotations

from typing import Any

from django import template
from django.utils.safestring import SafeString

from clinic_eval.web.rendering import render_markdown

register = template.Library()


@register.filter
def labels(value: Any) -> str:
    """A decision layer's value as text: multi-label lists joined, absent values as a dash."""
    if value is None or value == "" or value == []:
        return "—"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


@register.simple_tag
def decision_rows(layers: dict, *decisions: dict) -> list[tuple[str, list[str]]]:
    """One row per decision layer: its title and each decision's labels for that layer."""
    rows = []
    for name, layer in layers.items():
        rows.append((layer.get("title", name), [labels((d or {}).get(name)) for d in decisions]))
    return rows


UNIT_SUFFIXES = (
    ("_m_per_ml", "M/mL"),
    ("_ng_ml", "ng/mL"),
    ("_iu_l", "IU/L"),
    ("_pct", "%"),
    ("_ml", "mL"),
    ("_m", "M"),
)


@register.filter
def humanize_field(name: str) -> str:
    """``amh_ng_ml`` -> ``amh (ng/mL)``: field names read as labels with their unit."""
    for suffix, unit in UNIT_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return f"{name.removesuffix(suffix).replace('_', ' ')} ({unit})"
    return name.replace("_", " ")


@register.filter
def field_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "—" if value is None else str(value)


@register.filter
def markdown(text: str) -> SafeString:
    """Response or case text rendered as sanitised Markdown (see clinic_eval.rendering)."""
    return render_markdown(text)


@register.filter
def get_item(mapping: Any, key: Any) -> Any:
    return mapping.get(key) if hasattr(mapping, "get") else None
