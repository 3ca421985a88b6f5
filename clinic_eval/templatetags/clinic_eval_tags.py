from __future__ import annotations

from typing import Any

from django import template

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


@register.filter
def humanize_field(name: str) -> str:
    return name.replace("_", " ")
